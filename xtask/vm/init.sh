#!/bin/sh
# /init of the xvs test VM (base initramfs). Mounts the usual file systems, then runs
# /xvs/run.sh, which the harness puts in a second cpio archive with the test binaries.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname xvs-vm
/sbin/ip link set lo up
echo "XVS-VM: init reached after $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)"
if [ -x /xvs/run.sh ]; then
    /xvs/run.sh
else
    echo "XVS-VM: no /xvs/run.sh in the initramfs"
fi
sync
poweroff -f
