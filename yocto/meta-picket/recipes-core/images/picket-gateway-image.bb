# nooelint: oelint.var.suggestedvar.CVE_PRODUCT
SUMMARY = "Gateway image with the Picket eBPF sensor"
DESCRIPTION = "core-image-minimal with systemd, picketd and a separate data \
               partition mounted at /var/lib/picket for the device identity, \
               the alert spool and the active rule bundle."
HOMEPAGE = "https://example.invalid/picket"
BUGTRACKER = "https://example.invalid/picket/issues"
SECTION = "images"
LICENSE = "MIT"

# core-image-minimal's content (oe-core recipes-core/images), plus Picket.
IMAGE_INSTALL = "\
    packagegroup-core-boot \
    packagegroup-picket \
    ${CORE_IMAGE_EXTRA_INSTALL} \
    "
IMAGE_LINGUAS = ""

inherit core-image features_check

# systemd runs picketd's hardened units; "picket" turns on the kernel
# fragment (BTF, BPF, tracepoints) in recipes-kernel/linux.
REQUIRED_DISTRO_FEATURES = "systemd picket"

IMAGE_ROOTFS_SIZE ?= "8192"
# core-image-minimal adds this room on systemd images.
IMAGE_ROOTFS_EXTRA_SPACE:append = " + 4096"

# Root file system plus a data partition that survives updates (README.md).
IMAGE_FSTYPES += "wic"
WKS_FILE = "picket-gateway.wks"
