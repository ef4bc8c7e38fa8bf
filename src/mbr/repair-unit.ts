/**
 * The first-boot repair unit: a bash script and a systemd service that put the hybrid MBR
 * back whenever something has replaced it with a protective one, shipped as an Ignition
 * fragment that flash merges into the user's config (`mergeFragments(user, [fragment])`).
 *
 * Why: Ignition may rewrite the partition table on first boot (to grow root or add
 * partitions), and a rewrite that creates a new label leaves only a protective MBR, after
 * which a Pi 2/3 no longer boots: `sgdisk --zap-all` (Ignition's `wipeTable: true`) and
 * libfdisk re-creating the label (`sfdisk < dump`) do; editing partitions in place with the
 * sgdisk 1.0.9 / sfdisk 2.38 on the test machine (`sgdisk -e -d -n`, `sfdisk -N`) keeps an
 * existing hybrid ("The device contains hybrid MBR -- writing GPT only"). The unit does not
 * depend on which tool did it: it checks every boot.
 *
 * Ordering: Ignition and the root growth run in the initramfs, before the switch to the real
 * root, so by the time any unit of the real system starts the GPT has its final shape;
 * `ignition-complete.target` exists only in the initramfs (ConditionPathExists=
 * /etc/initrd-release) and cannot be ordered against from here. The unit only needs /boot
 * mounted (to find the disk): After=local-fs.target. It runs on every boot: a `sfdisk --json`
 * and one 512-byte read when nothing is to be done.
 *
 * The script uses only bash, coreutils and util-linux (findmnt, lsblk, sfdisk, blockdev),
 * all on a stock Fedora CoreOS (and Flatcar) host. It writes exactly the 66 bytes that
 * `buildHybridMbr` + `encodeMbrEntries` produce (CHS FE FF FF), so `provision mbr fix` and the
 * unit agree byte for byte.
 */
import { createHash } from "node:crypto";
import { dataUrl } from "../ignition/merge.js";

export const REPAIR_SCRIPT_PATH = "/usr/local/sbin/provision-hybrid-mbr";
export const REPAIR_UNIT_NAME = "provision-hybrid-mbr.service";
/** Ignition spec of the fragment: 3.3.0 is the newest that Debian's ignition-validate 2.14 knows. */
export const REPAIR_FRAGMENT_SPEC = "3.3.0";

/**
 * The script, byte for byte as installed at REPAIR_SCRIPT_PATH. A TS template literal so that
 * dist/ has it without a copy step: in this source `\${` stands for `${` and `\\` for `\`.
 */
export const REPAIR_SCRIPT = `#!/bin/bash
# provision-hybrid-mbr: restore the hybrid MBR that a Raspberry Pi 2/3 boots from.
# Installed by provision; provision-hybrid-mbr.service runs it on every boot.
#
#   provision-hybrid-mbr [DISK]      DISK: default the disk holding /boot
#
# The Pi 2/3 boot ROM reads only the MBR, only slot 1, and needs a FAT type there; Linux
# keeps using the GPT as long as an 0xEE entry starts at LBA 1. A tool that rewrites the
# partition table can leave a protective MBR (0xEE in slot 1) behind, and then the Pi no
# longer boots. This writes back:
#   slot 1: 0x80 (bootable), type 0x0C, the GPT partition named EFI-SYSTEM (same start, size)
#   slot 2: 0x00, type 0xEE, from LBA 1 to the sector before the ESP
#   slots 3-4: empty; CHS fields FE FF FF ("use the LBA fields"); signature 55 AA
# It reads the GPT with \`sfdisk --json\` (no udev, no partition device nodes needed), writes
# bytes 446-511 of sector 0 only and only when they differ, never touches the GPT, the boot
# code or the disk signature, reads back what it wrote, and logs one line on stdout.
# A disk without an EFI-SYSTEM partition is left alone (exit 0).
set -euo pipefail
export LC_ALL=C
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

ESP_NAME=EFI-SYSTEM

die() {
  echo "provision-hybrid-mbr: $*" >&2
  exit 1
}

# The whole disk under a mounted filesystem: /boot, else /sysroot, else /.
default_disk() {
  local mp src dev name sys
  for mp in /boot /sysroot /; do
    src=$(findmnt -nv -o SOURCE --mountpoint "$mp" 2>/dev/null | head -n 1) || continue
    [[ -n $src && -b $src ]] || continue
    dev=$(readlink -f -- "$src")
    name=\${dev##*/}
    # lsblk reads PKNAME from sysfs (no udev needed); /sys is the fallback.
    sys=$(lsblk -ndo PKNAME -- "$dev" 2>/dev/null || true)
    if [[ -z $sys && -e /sys/class/block/$name/partition ]]; then
      sys=$(readlink -f -- "/sys/class/block/$name/..")
      sys=\${sys##*/}
    fi
    [[ -n $sys && -b /dev/$sys ]] || continue
    echo "/dev/$sys"
    return 0
  done
  return 1
}

# 32-bit little-endian, as hex.
le32() {
  local v=$1
  printf '%02x%02x%02x%02x' $((v & 255)) $((v >> 8 & 255)) $((v >> 16 & 255)) $((v >> 24 & 255))
}

# Bytes 446-511 of sector 0, as hex.
read_entries() {
  dd if="$disk" bs=512 count=1 status=none | od -An -v -tx1 -j 446 -N 66 | tr -d ' \\n'
}

disk=\${1:-}
if [[ -z $disk ]]; then
  disk=$(default_disk) || die "cannot find the disk holding /boot; pass it: provision-hybrid-mbr /dev/mmcblk0"
fi
[[ -b $disk || -f $disk ]] || die "$disk is not a block device or a disk image"

if ! table=$(sfdisk --json -- "$disk" 2>&1); then
  if [[ $table == *"does not contain a recognized partition table"* ]]; then
    echo "no partition table on $disk; no $ESP_NAME partition, nothing to do"
    exit 0
  fi
  die "sfdisk --json $disk failed: \${table##*$'\\n'}"
fi
table=\${table//$'\\n'/ }

re='"label": *"([a-z]+)"'
[[ $table =~ $re ]] || die "cannot parse the output of sfdisk --json $disk"
if [[ \${BASH_REMATCH[1]} != gpt ]]; then
  echo "no GPT on $disk (\${BASH_REMATCH[1]} label); no $ESP_NAME partition, nothing to do"
  exit 0
fi
re='"sectorsize": *([0-9]+)'
if [[ $table =~ $re && \${BASH_REMATCH[1]} != 512 ]]; then
  echo "$disk has \${BASH_REMATCH[1]}-byte sectors; a Raspberry Pi 2/3 boots only from 512-byte-sector disks, nothing to do"
  exit 0
fi

# Each partition is a JSON object without nested braces; take the first one named EFI-SYSTEM.
start='' size=''
rest=$table
re_obj='\\{[^{}]*\\}'
re_name="\\"name\\": *\\"$ESP_NAME\\""
re_start='"start": *([0-9]+)'
re_size='"size": *([0-9]+)'
while [[ $rest =~ $re_obj ]]; do
  obj=\${BASH_REMATCH[0]}
  rest=\${rest#*"$obj"}
  if [[ $obj =~ $re_name ]]; then
    [[ $obj =~ $re_start ]] && start=\${BASH_REMATCH[1]}
    [[ $obj =~ $re_size ]] && size=\${BASH_REMATCH[1]}
    break
  fi
done
if [[ -z $start ]]; then
  echo "no $ESP_NAME partition on $disk; nothing to do"
  exit 0
fi
[[ -n $size ]] || die "cannot parse the size of $ESP_NAME in sfdisk --json $disk"
((start >= 2 && size >= 1)) || die "$ESP_NAME on $disk starts at LBA $start; that is inside the GPT"
((start + size - 1 <= 0xFFFFFFFF)) || die "$ESP_NAME on $disk ends beyond 2 TiB; an MBR entry cannot describe it"

want="80feffff0cfeffff$(le32 "$start")$(le32 "$size")"
want+="00feffffeefeffff$(le32 1)$(le32 $((start - 1)))"
want+="$(printf '%064d' 0)55aa"

have=$(read_entries)
if [[ $have == "$want" ]]; then
  echo "hybrid MBR already correct on $disk"
  exit 0
fi

bytes=''
for ((i = 0; i < \${#want}; i += 2)); do
  bytes+="\\\\x\${want:i:2}"
done
printf '%b' "$bytes" |
  dd of="$disk" bs=66 count=1 seek=446 oflag=seek_bytes iflag=fullblock conv=notrunc,fsync status=none ||
  die "writing the MBR of $disk failed"

# Read the medium back, not the page cache.
if [[ -b $disk ]]; then
  blockdev --flushbufs "$disk"
fi
have=$(read_entries)
[[ $have == "$want" ]] || die "wrote the hybrid MBR to $disk but it reads back differently"
echo "hybrid MBR restored on $disk (ESP at LBA $start, $size sectors)"
`;

export const REPAIR_UNIT = `[Unit]
Description=Restore the hybrid MBR a Raspberry Pi 2/3 boots from
# Ignition's partitioning and the root growth run in the initramfs, before this system
# starts; /boot must be mounted for the script to find the disk.
After=local-fs.target

[Service]
Type=oneshot
ExecStart=${REPAIR_SCRIPT_PATH}
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
`;

const sha512 = (text: string) => createHash("sha512").update(text, "utf8").digest("hex");

/**
 * The Ignition fragment (spec 3.3.0): the script as a data URL with its sha512, mode 0755,
 * and the unit, enabled.
 */
export function repairUnitFragment(): object {
  return {
    ignition: { version: REPAIR_FRAGMENT_SPEC },
    storage: {
      files: [
        {
          path: REPAIR_SCRIPT_PATH,
          mode: 0o755,
          overwrite: true,
          contents: {
            source: dataUrl(REPAIR_SCRIPT),
            verification: { hash: `sha512-${sha512(REPAIR_SCRIPT)}` },
          },
        },
      ],
    },
    systemd: { units: [{ name: REPAIR_UNIT_NAME, enabled: true, contents: REPAIR_UNIT }] },
  };
}

const indent = (text: string, by: string) =>
  text
    .split("\n")
    .map((l) => (l === "" ? l : by + l))
    .join("\n");

/**
 * The same as a Butane config (variant fcos 1.4.0, which compiles to Ignition 3.3.0), with
 * the script inline, for people who keep their configs in Butane.
 */
export function repairUnitButane(): string {
  return `# provision mbr repair-unit --butane: restores the hybrid MBR of a Raspberry Pi 2/3
# on every boot. Merge it into your own config, or compile it and add it to
# ignition.config.merge.
variant: fcos
version: 1.4.0
storage:
  files:
    - path: ${REPAIR_SCRIPT_PATH}
      mode: 0755
      overwrite: true
      contents:
        inline: |
${indent(REPAIR_SCRIPT.trimEnd(), " ".repeat(10))}
systemd:
  units:
    - name: ${REPAIR_UNIT_NAME}
      enabled: true
      contents: |
${indent(REPAIR_UNIT.trimEnd(), " ".repeat(8))}
`;
}
