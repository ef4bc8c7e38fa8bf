/**
 * The FCOS streams and Flatcar channels there are: checked when an image is resolved
 * (./index.ts) and offered by shell completion (./options.ts). No imports: light to load.
 */
export const FCOS_STREAMS = ["stable", "testing", "next"] as const;
export const FLATCAR_CHANNELS = ["stable", "beta", "alpha"] as const;
