#!/bin/sh
# Run inside the image being built: gpio-sim.ko for the image's kernel, from the
# kernel's own sources in Debian's linux-source package, then the compiler and the
# sources removed again. The module lands in /lib/modules/$KVER/extra (modprobe gpio-sim).
set -eu
started=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
kver=$(ls /lib/modules | sort -V | tail -n 1)
series=$(echo "$kver" | cut -d. -f1,2)
apt-get install -y --no-install-recommends "linux-source-$series" "linux-headers-$kver" make
work=$(mktemp -d)
tar -xf "/usr/src/linux-source-$series.tar.xz" -C "$work" --strip-components=1 \
    "linux-source-$series/drivers/gpio/gpio-sim.c" "linux-source-$series/drivers/gpio/gpiolib.h" \
    "linux-source-$series/kernel/irq/irq_sim.c"
mkdir "$work/module"
cp /tmp/gpio-sim/Kbuild "$work/module/"
cp "$work/drivers/gpio/gpio-sim.c" "$work/module/sim.c"
cp "$work/drivers/gpio/gpiolib.h" "$work/module/"
# irq_to_desc() is not exported to modules; generic_handle_irq() reaches the same
# handler (handle_simple_irq, which irq_sim maps every line to) through the descriptor.
sed 's/handle_simple_irq(irq_to_desc(\([a-z_]*\)))/generic_handle_irq(\1)/' \
    "$work/kernel/irq/irq_sim.c" > "$work/module/irq-sim.c"
grep -q 'generic_handle_irq(' "$work/module/irq-sim.c"
make -C "/usr/src/linux-headers-$kver" M="$work/module" modules
install -D -m 0644 "$work/module/gpio-sim.ko" "/lib/modules/$kver/extra/gpio-sim.ko"
depmod "$kver"
rm -rf "$work"
apt-get purge -y --autoremove "linux-source-$series" "linux-headers-$kver" make
# The time it took, in build.log: seconds natively, minutes through qemu-user (an arm64
# image built on amd64).
echo "gpio-sim: built for $kver in $(($(date +%s) - started)) s"
