# picketd's kernel requirements, only for distros that ask for them: the
# df-picket override exists when DISTRO_FEATURES has "picket"
# (conf/distro/include/picket.inc), so adding the layer alone changes no
# kernel.
FILESEXTRAPATHS:prepend:df-picket := "${THISDIR}/${PN}:"

SRC_URI:append:df-picket = " file://picket.cfg"

# CONFIG_DEBUG_INFO_BTF needs pahole at kernel link time. The kernel class
# adds pahole-native (and stops passing PAHOLE=false, which silently drops
# BTF) only when KERNEL_DEBUG is "True".
KERNEL_DEBUG:df-picket = "True"
