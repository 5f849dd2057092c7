#!/usr/bin/env bash
# Builds the soft-RoCE test VM's boot files from Debian packages, without installing a kernel:
#
#   image.sh KERNEL_DEB OUT_DIR
#
# writes OUT_DIR/kernel (the kernel from KERNEL_DEB, a linux-image-*-amd64 package, unpacked to
# an ELF vmlinux that QEMU boots through its PVH entry, else the bzImage as shipped) and
# OUT_DIR/initrd.cpio (an uncompressed initramfs that is the whole guest userland: the host's
# tools listed below with their `ldd` closure, busybox for the rest, and only the kernel modules
# that rxe, virtio, 9p, the NVDIMM and ext4 need), plus OUT_DIR/initrd.files (every file in it,
# so tests/vm/run knows which libraries a test binary still needs from the 9p share).
# Called by tests/vm/run, which caches OUT_DIR under a key made of the package versions and of
# this file and tests/vm/init; run it by hand only to debug the image.
set -euo pipefail
deb=$(realpath "$1")
out=$(realpath -m "$2")
here=$(cd "$(dirname "$0")" && pwd)
work="$out/build.tmp"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# ---- kernel: unpacked, not installed; the package ships no modules.dep, so run depmod
kdir="$work/kpkg"
dpkg-deb -x "$deb" "$kdir"
if [ ! -d "$kdir/lib/modules" ] && [ -d "$kdir/usr/lib/modules" ]; then
    mkdir -p "$kdir/lib"
    mv "$kdir/usr/lib/modules" "$kdir/lib/"
fi
kver=$(ls "$kdir/lib/modules")
[ "$(echo "$kver" | wc -l)" = 1 ] || { echo "image.sh: expected one kernel in $deb, got: $kver" >&2; exit 1; }
depmod -b "$kdir" "$kver"
# Under TCG, the bzImage's own decompressor takes 10-15 s before the kernel prints a line.
# QEMU boots an uncompressed ELF vmlinux directly through its PVH entry point (Debian builds
# CONFIG_PVH), so unpack it here once; keep the bzImage when that does not work out.
bz="$kdir/boot/vmlinuz-$kver"
extract_vmlinux() {
    local pair hex tool off
    for pair in "fd377a585a00:xz -dc" "28b52ffd:zstd -dcq" "1f8b08:gzip -dc"; do
        hex=${pair%%:*}
        tool=${pair#*:}
        command -v "${tool%% *}" >/dev/null || continue
        for off in $(LC_ALL=C grep -obUaP "$(echo "$hex" | sed 's/../\\x&/g')" "$bz" | cut -d: -f1); do
            # trailing bytes after the stream make the tool complain; the output is what counts
            tail -c +$((off + 1)) "$bz" | $tool >"$work/vmlinux" 2>/dev/null || true
            [ "$(head -c4 "$work/vmlinux" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] && return 0
        done
    done
    return 1
}
# XEN_ELFNOTE_PHYS32_ENTRY (18): the PVH entry point
if extract_vmlinux && readelf -n "$work/vmlinux" 2>/dev/null | grep -q 'Xen.*0x00000012'; then
    mv "$work/vmlinux" "$out/kernel"
    echo "vmlinux (PVH)" >"$out/kernel-format"
else
    echo "image.sh: note: no PVH-bootable vmlinux in $bz; booting the bzImage (slower under TCG)"
    cp "$bz" "$out/kernel"
    echo bzImage >"$out/kernel-format"
fi

# ---- userland
root="$work/root"
mkdir -p "$root"/usr/{bin,sbin,lib/x86_64-linux-gnu,lib64} \
    "$root"/{etc,proc,sys,dev,tmp,run,root,mnt/pmem}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done # merged /usr, as on the host

# put FILE into the image at its canonical path; the name it was asked by (a symlink such as
# libfoo.so.1 -> libfoo.so.1.2.3) becomes a symlink to it
put() {
    local f=$1 real dir
    real=$(readlink -f "$f")
    [ -e "$real" ] || { echo "image.sh: missing $f" >&2; exit 1; }
    mkdir -p "$root$(dirname "$real")"
    [ -e "$root$real" ] || cp -a "$real" "$root$real"
    dir=$(readlink -f "$(dirname "$f")")
    if [ "$dir/$(basename "$f")" != "$real" ] && [ ! -e "$root$dir/$(basename "$f")" ]; then
        mkdir -p "$root$dir"
        ln -s "$real" "$root$dir/$(basename "$f")"
    fi
}
# FILE and every shared library it loads
put_with_libs() {
    local f lib
    for f in "$@"; do
        put "$f"
        for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ )]*'); do put "$lib"; done
    done
}
L=/usr/lib/x86_64-linux-gnu
rxe_provider=$(ls $L/libibverbs/librxe-rdmav*.so | head -1)
put_with_libs /usr/bin/bash /usr/bin/kmod /usr/bin/ip /usr/bin/rdma /usr/bin/mount /usr/bin/umount \
    /usr/bin/timeout /usr/sbin/mke2fs /usr/bin/ndctl \
    /usr/bin/ibv_devinfo /usr/bin/ibv_devices /usr/bin/ibv_rc_pingpong /usr/bin/rping \
    /usr/bin/ib_write_lat /usr/bin/ib_write_bw /usr/bin/ib_read_lat /usr/bin/ib_send_lat \
    "$rxe_provider" $L/libibverbs.so.1 $L/librdmacm.so.1 \
    $L/libgcc_s.so.1 $L/libm.so.6 $L/libpthread.so.0 $L/libdl.so.2 $L/librt.so.1
put /etc/libibverbs.d/rxe.driver
put /etc/mke2fs.conf
ln -s mke2fs "$root/usr/sbin/mkfs.ext4"
for t in modprobe insmod rmmod lsmod modinfo depmod; do ln -s ../bin/kmod "$root/usr/sbin/$t"; done
# /bin/sh must be bash: busybox's sh runs its own applets (ip, mount, ...) before $PATH
ln -s bash "$root/usr/bin/sh"
cp /usr/bin/busybox "$root/usr/bin/busybox"
/usr/bin/busybox --list-full | while read -r applet; do
    name=${applet##*/}
    for d in usr/bin usr/sbin; do
        [ -e "$root/$d/$name" ] || [ -L "$root/$d/$name" ] && continue 2
    done
    case $applet in
        sbin/* | bin/*) applet=usr/$applet ;;
    esac
    [ -e "$root/$applet" ] || ln -s /usr/bin/busybox "$root/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n' >"$root/etc/hosts"

# ---- kernel modules: only the dependency closure of what the guest loads (a few MB, not 400).
# -C with an empty directory: ignore the host's /etc/modprobe.d (ndctl installs an
# "install libnvdimm" hook there that hides libnvdimm from --show-depends).
want="virtio_pci virtio_net 9pnet_virtio 9p nfit nd_pmem dax_pmem device_dax ext4
      crc32c_generic crc32_generic rdma_rxe ib_uverbs rdma_ucm"
mkdir -p "$work/empty.d"
mods=""
for m in $want; do
    if modprobe -C "$work/empty.d" -d "$kdir" -S "$kver" --show-depends "$m" >/dev/null 2>&1; then
        mods="$mods $m"
    else
        echo "image.sh: note: kernel $kver has no module $m (built in or absent)"
    fi
done
for m in $mods; do
    modprobe -C "$work/empty.d" -d "$kdir" -S "$kver" --show-depends "$m"
done | awk '$1 == "insmod" { print $2 }' | sort -u | while read -r ko; do
    rel=${ko#"$kdir"/}
    mkdir -p "$root/$(dirname "$rel")"
    cp "$ko" "$root/$rel"
done
cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"
echo "$mods" >"$root/etc/keel-modules"

install -m 0755 "$here/init" "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet >"$out/initrd.cpio.tmp")
(cd "$root" && find . -mindepth 1 | sed 's|^\.||' | LC_ALL=C sort >"$out/initrd.files")
echo "$kver" >"$out/kernel-version"
mv "$out/initrd.cpio.tmp" "$out/initrd.cpio"
