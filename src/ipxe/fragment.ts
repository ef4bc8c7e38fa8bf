/**
 * `pxe-stick --print-ignition`: the Ignition fragment to merge into the hosted config so
 * the booted OS uses the stick. A mount unit puts the volume labelled `secrets` on
 * /secrets read-only (nosuid, nodev, noexec), and a oneshot installs its authorized_keys
 * for `core` (into ~/.ssh/authorized_keys.d, which FCOS reads, and merged into
 * ~/.ssh/authorized_keys, which Flatcar reads). Spec 3.3.0: accepted by FCOS, Flatcar and
 * every ignition-validate since 2.14.
 */
export const SECRETS_LABEL = "secrets";
export const SECRETS_MOUNTPOINT = "/secrets";

const MOUNT_UNIT = `[Unit]
Description=Secrets volume from the provision boot stick (read-only)
DefaultDependencies=no
Conflicts=umount.target
Before=local-fs.target umount.target

[Mount]
What=/dev/disk/by-label/${SECRETS_LABEL}
Where=${SECRETS_MOUNTPOINT}
Type=ext4
Options=ro,nosuid,nodev,noexec

[Install]
WantedBy=local-fs.target
`;

const KEYS_UNIT = `[Unit]
Description=SSH keys for core from the provision secrets volume
Requires=secrets.mount
After=secrets.mount
ConditionPathExists=${SECRETS_MOUNTPOINT}/authorized_keys
Before=sshd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/install -d -m 0700 -o core -g core /home/core/.ssh /home/core/.ssh/authorized_keys.d
ExecStart=/usr/bin/install -m 0600 -o core -g core ${SECRETS_MOUNTPOINT}/authorized_keys /home/core/.ssh/authorized_keys.d/provision-secrets
ExecStart=/bin/sh -c 'cat /home/core/.ssh/authorized_keys.d/* > /home/core/.ssh/authorized_keys.new && chown core:core /home/core/.ssh/authorized_keys.new && chmod 0600 /home/core/.ssh/authorized_keys.new && mv /home/core/.ssh/authorized_keys.new /home/core/.ssh/authorized_keys'

[Install]
WantedBy=multi-user.target
`;

export const SECRETS_UNITS = {
  "secrets.mount": MOUNT_UNIT,
  "secrets-ssh-keys.service": KEYS_UNIT,
} as const;

export function secretsFragment(): object {
  return {
    ignition: { version: "3.3.0" },
    systemd: {
      units: Object.entries(SECRETS_UNITS).map(([name, contents]) => ({
        name,
        enabled: true,
        contents,
      })),
    },
  };
}
