# nooelint: oelint.var.bbclassextend
SUMMARY = "Picket eBPF security sensor for Linux gateways"
DESCRIPTION = "picketd watches process, file, network and privileged \
               syscall activity through eBPF, evaluates Sigma rules on the \
               device and forwards alerts to the Picket fleet backend over \
               MQTT with mutual TLS."
HOMEPAGE = "https://example.invalid/picket"
BUGTRACKER = "https://example.invalid/picket/issues"
CVE_PRODUCT = "picketd"
SECTION = "security"
# The probes are dual-licensed (GPL-2.0-only OR Apache-2.0); under the
# Apache option the whole binary is Apache-2.0, the license of the
# repository's LICENSE file (the canonical text, as in oe-core's
# common-licenses).
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

PV = "0.1.0+git"

# Where the Picket repository is fetched from: set these in local.conf or
# site.conf (README.md). The default host is a placeholder that cannot
# resolve.
PICKET_GIT_REPO ?= "example.invalid/picket.git"
PICKET_GIT_PROTOCOL ?= "https"
PICKET_GIT_BRANCH ?= "main"
SRC_URI = "git://${PICKET_GIT_REPO};protocol=${PICKET_GIT_PROTOCOL};branch=${PICKET_GIT_BRANCH} \
           file://picketd.toml \
           file://picketd-site-config \
           file://picketd.service \
           file://picket-enroll \
           file://picket-enroll.service \
           "
# picketd-crates.inc lists the crates of the commit this layer came from,
# so a release build pins SRCREV to that commit (local.conf or a distro
# include: SRCREV:pn-picketd = "<commit>"; README.md, "Source revision").
# The default follows the branch for development builds, which work as long
# as the branch's Cargo.lock matches the crate list; it is a default and not
# unset because an unset SRCREV would break parsing for every build that
# adds the layer.
# nooelint: oelint.vars.autorev
SRCREV ?= "${AUTOREV}"

S = "${WORKDIR}/git"

require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates systemd

# Little-endian only: the committed probes are bpfel objects, and picketd
# knows the module-syscall numbers of x86_64 and aarch64.
COMPATIBLE_HOST = "(x86_64|aarch64)-.*-linux.*"

# Only the daemon: the workspace also holds the fleet backend and tools.
# No clang/LLVM is needed: the eBPF probes are compiled C objects committed
# in probes/bpf/ and embedded with include_bytes! (probes/README.md), and no
# crate of picketd has a bindgen step. ring's build script compiles its C
# and assembly with the target toolchain the cargo class already provides.
CARGO_BUILD_FLAGS += "-p picket-appliance --bin picketd"

# HOST:PORT of the fleet's MQTT broker. When set (site.conf or local.conf),
# the installed /etc/picket/picketd.toml enables [uplink] with every file
# enrollment writes on the data partition (/var/lib/picket); when empty the
# default configuration is installed unchanged and picketd runs offline.
PICKET_UPLINK_BROKER ??= ""

do_install() {
    install -d ${D}${sbindir}
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/picketd ${D}${sbindir}/picketd

    install -d ${D}${sysconfdir}/picket/rules
    if [ -n "${PICKET_UPLINK_BROKER}" ]; then
        sh ${WORKDIR}/picketd-site-config "${PICKET_UPLINK_BROKER}" \
            < ${WORKDIR}/picketd.toml > ${D}${sysconfdir}/picket/picketd.toml
        chmod 0644 ${D}${sysconfdir}/picket/picketd.toml
    else
        install -m 0644 ${WORKDIR}/picketd.toml ${D}${sysconfdir}/picket/picketd.toml
    fi
    # The same rules are compiled into picketd; a file with a rule's id
    # replaces the built-in one, so these are the copies an operator edits.
    install -m 0644 ${S}/appliance/rules/*.yml ${D}${sysconfdir}/picket/rules/

    install -d ${D}${libexecdir}/picket
    install -m 0755 ${WORKDIR}/picket-enroll ${D}${libexecdir}/picket/picket-enroll

    install -d ${D}${systemd_system_unitdir}
    for unit in picketd.service picket-enroll.service; do
        sed -e 's,@SBINDIR@,${sbindir},g' \
            -e 's,@LIBEXECDIR@,${libexecdir},g' \
            ${WORKDIR}/$unit > ${D}${systemd_system_unitdir}/$unit
        chmod 0644 ${D}${systemd_system_unitdir}/$unit
    done
}

SYSTEMD_SERVICE:${PN} = "picketd.service picket-enroll.service"

FILES:${PN} += "${libexecdir}/picket"
CONFFILES:${PN} = "${sysconfdir}/picket/picketd.toml"
