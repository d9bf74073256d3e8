SUMMARY = "Picket sensor for gateway images"
DESCRIPTION = "picketd with its configuration, rules and systemd units, and \
               the fsck the image needs to keep its data partition healthy."
HOMEPAGE = "https://example.invalid/picket"
BUGTRACKER = "https://example.invalid/picket/issues"
SECTION = "security"

inherit packagegroup

RDEPENDS:${PN} = "\
    e2fsprogs-e2fsck \
    picketd \
    "
