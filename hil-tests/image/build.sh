#!/bin/sh
# Builds a bootable gateway image for the HIL image test: Debian's kernel
# (it has BTF) and an initramfs laid out like the Yocto image
# (meta-picket): /usr/sbin/picketd, /etc/picket/picketd.toml,
# /etc/picket/rules/*.yml, the data partition (virtio disk /dev/vda, ext4)
# mounted at /var/lib/picket, and a start-up that enrolls once and starts
# picketd.
#
#   build.sh OUT_DIR [PICKETD_BINARY]
#
# Writes OUT_DIR/vmlinuz and OUT_DIR/initramfs.cpio.gz. Needs (as root, once)
#   apt-get install -y linux-image-amd64 qemu-system-x86 busybox-static
# The broker and backend addresses are not baked in: the guest reads them
# from /var/lib/picket/hil.env on the data disk (hil-tests/tests/image.rs
# writes it), so one image serves every run.
set -eu

out=${1:?usage: build.sh OUT_DIR [PICKETD_BINARY]}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
picketd=${2:-${PICKETD:-$target/debug/picketd}}
[ -x "$picketd" ] || { echo "build.sh: no picketd at $picketd" >&2; exit 1; }
busybox=$(command -v busybox) || { echo "build.sh: install busybox-static" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
    echo "build.sh: $busybox is dynamic: install busybox-static" >&2
    exit 1
fi

# The newest Debian kernel installed.
vmlinuz=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n1)
[ -n "$vmlinuz" ] || { echo "build.sh: install linux-image-amd64" >&2; exit 1; }
kver=${vmlinuz#/boot/vmlinuz-}
grep -q '^CONFIG_DEBUG_INFO_BTF=y' "/boot/config-$kver" ||
    { echo "build.sh: $kver has no BTF" >&2; exit 1; }

mkdir -p "$out"
root=$(mktemp -d "$out/root.XXXXXX")
trap 'rm -rf "$root"' EXIT INT TERM

mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" \
    "$root/etc/picket/rules" "$root/var/lib/picket" "$root/lib/modules" \
    "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/run" "$root/root"
cp "$busybox" "$root/bin/busybox"

# picketd, stripped (the debug build is mostly DWARF), and its libraries
# at the paths its loader asks for.
strip -o "$root/usr/sbin/picketd" "$picketd"
ldd "$picketd" | awk '/=>/ { print $3 } /^\t\// { print $1 }' | while read -r lib; do
    [ -f "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# The loader's own path (/lib64/ld-linux-x86-64.so.2) on merged-/usr hosts.
interp=$(ldd "$picketd" | awk '/ld-linux/ { print $1 }')
if [ -n "$interp" ] && [ ! -e "$root$interp" ]; then
    mkdir -p "$root$(dirname "$interp")"
    cp -L "$interp" "$root$interp"
fi

# Config and rules as the Yocto recipe installs them (uplink settings are
# appended at boot from hil.env: the recipe's picketd-site-config step).
# The binary's own embedded default (what `generate-config` prints), so
# config and binary always match.
"$picketd" generate-config > "$root/etc/picket/picketd.toml.in"
cp "$repo"/appliance/rules/*.yml "$root/etc/picket/rules/"
# A site rule next to them, as an operator adds one: failed SSH logins in
# the auth log (user space only, so it works whatever probes load).
cat > "$root/etc/picket/rules/hil_ssh_failed.yml" <<'EOF_RULE'
title: HIL failed SSH login
id: 6c0d3b56-1f4e-4f4b-9a57-3c2f6a0c5e02
status: test
author: Picket HIL tests
tags: [attack.credential-access, attack.t1110]
logsource: {product: linux, service: sshd}
detection:
  sel: {Outcome: failure}
  condition: sel
level: low
EOF_RULE

# Modules Debian builds as modules that the image needs, in dependency
# order (modprobe --show-depends prints insmod lines).
: > "$root/lib/modules/load"
for m in virtio_pci virtio_blk virtio_net ext4; do
    modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
    name=$(basename "$ko")
    case "$ko" in
        *.ko.xz) xz -dc "$ko" > "$root/lib/modules/${name%.xz}"; name=${name%.xz} ;;
        *.ko.zst) zstd -qdc "$ko" > "$root/lib/modules/${name%.zst}"; name=${name%.zst} ;;
        *) cp "$ko" "$root/lib/modules/$name" ;;
    esac
    echo "$name" >> "$root/lib/modules/load"
done

# The account and host files every gateway has (and FIM watches).
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"

install -m 0755 "$here/init" "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
cp "$vmlinuz" "$out/vmlinuz"
echo "$kver" > "$out/kernel-version"
echo "image: $out/vmlinuz ($kver), $out/initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1))"
