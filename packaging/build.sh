#!/usr/bin/env bash
# Builds vmagent's own .deb and .rpm from a release binary.
#
#   packaging/build.sh [--out DIR] [--binary PATH] [--version V] [--arch amd64|arm64]
#
#   --out DIR      where the two packages go (default: target/packages)
#   --binary PATH  the vmagent binary to package (default: `cargo build --release
#                  --locked`, then target/release/vmagent)
#   --version V    the package version (default: Cargo.toml's; a SemVer pre-release
#                  1.2.0-rc.1 becomes 1.2.0~rc.1, which sorts before 1.2.0 in dpkg and rpm)
#   --arch A       amd64 or arm64 (default: the binary's ELF machine; must match it)
#
# Environment:
#   VMAGENT_MAINTAINER   the deb Maintainer / rpm Packager field
#   PKG_COMPRESSION      xz (default) or gzip (fast, e.g. for tests), for both packages
#   SOURCE_DATE_EPOCH    mtime of every packaged file (default: the last commit's time)
#   VMAGENT_DOCS_BINARY  a vmagent that runs on this machine, used to generate the man
#                        page and shell completions when --binary is for another
#                        architecture (default: --binary itself)
#
# Needs dpkg-deb, rpmbuild, readelf, gzip (tests/setup.sh installs them). Prints the path
# of the .deb, then the path of the .rpm, on stdout; everything else goes to stderr.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")

die() {
    echo "packaging/build.sh: $*" >&2
    exit 2
}

out=
binary=
version=
arch=
while [ $# -gt 0 ]; do
    case "$1" in
    --out | --binary | --version | --arch)
        [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
        --out) out=$2 ;;
        --binary) binary=$2 ;;
        --version) version=$2 ;;
        --arch) arch=$2 ;;
        esac
        shift 2
        ;;
    --out=* | --binary=* | --version=* | --arch=*)
        v=${1#*=}
        case "$1" in
        --out=*) out=$v ;;
        --binary=*) binary=$v ;;
        --version=*) version=$v ;;
        --arch=*) arch=$v ;;
        esac
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

for tool in dpkg-deb rpmbuild readelf gzip; do
    command -v "$tool" >/dev/null || die "$tool is required (tests/setup.sh installs it)"
done

# --- the binary ---------------------------------------------------------------------
if [ -z "$binary" ]; then
    echo "packaging/build.sh: cargo build --release --locked" >&2
    (cd "$top" && cargo build --release --locked >&2)
    target_dir=${CARGO_TARGET_DIR:-target}
    case "$target_dir" in /*) ;; *) target_dir=$top/$target_dir ;; esac
    binary=$target_dir/release/vmagent
fi
[ -f "$binary" ] || die "no binary at '$binary'"
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")

machine=$(LC_ALL=C readelf -h "$binary" 2>/dev/null | sed -n 's/^ *Machine: *//p')
case "$machine" in
*X86-64*) elf_arch=amd64 ;;
AArch64) elf_arch=arm64 ;;
*) die "'$binary' is not an x86-64 or aarch64 ELF executable (machine: '${machine:-none}')" ;;
esac
[ -n "$arch" ] || arch=$elf_arch
case "$arch" in
amd64) rpm_arch=x86_64 ;;
arm64) rpm_arch=aarch64 ;;
*) die "--arch must be amd64 or arm64, not '$arch'" ;;
esac
[ "$arch" = "$elf_arch" ] || die "--arch $arch does not match the binary ($elf_arch): $binary"
sections=$(LC_ALL=C readelf -S -W "$binary")

# Shared libraries: glibc and libgcc_s (Rust's std unwinder) only; the versions come
# from the symbol versions the binary needs (what dpkg-shlibdeps computes).
needed=$(LC_ALL=C readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
needs_gcc=
for lib in $needed; do
    case "$lib" in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | libutil.so.1 | ld-linux-*.so.*) ;;
    libgcc_s.so.1) needs_gcc=1 ;;
    *) die "the binary needs $lib: only glibc and libgcc_s are expected (no OpenSSL etc.)" ;;
    esac
done
verdefs=$(LC_ALL=C readelf -V -W "$binary" | sed -n 's/.*Name: \([A-Z]*_[0-9][0-9.]*\).*/\1/p' | sort -u)
glibc_min=$(printf '%s\n' "$verdefs" | sed -n 's/^GLIBC_//p' | sort -V | tail -n 1)
[ -n "$glibc_min" ] || die "cannot find the glibc symbol versions of $binary"
depends="libc6 (>= $glibc_min)"
if [ -n "$needs_gcc" ]; then
    gcc_min=$(printf '%s\n' "$verdefs" | sed -n 's/^GCC_\([0-9]*\.[0-9]*\).*/\1/p' | sort -V | tail -n 1)
    depends="$depends, libgcc-s1 (>= ${gcc_min:-3.0})"
fi

# --- version ------------------------------------------------------------------------
cargo_version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
[ -n "$version" ] || version=$cargo_version
[ -n "$version" ] || die "no version (Cargo.toml has none; pass --version)"
pkg_version=${version//-/\~}
[[ "$pkg_version" =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || die "'$version' is not a usable package version"

docs_binary=${VMAGENT_DOCS_BINARY:-$binary}
bin_version=$("$docs_binary" --version 2>/dev/null) ||
    die "cannot run '$docs_binary' to generate the man page and completions (another architecture? set VMAGENT_DOCS_BINARY to a vmagent for this machine, or install qemu-user-binfmt)"
if [ "$bin_version" != "vmagent $version" ]; then
    echo "packaging/build.sh: warning: packaging version $version, but '$docs_binary --version' says '$bin_version'" >&2
fi

maintainer=${VMAGENT_MAINTAINER:-vmagent maintainers <vmagent@example.invalid>}
case "${PKG_COMPRESSION:-xz}" in
xz) deb_z=(-Zxz -z6) rpm_payload=w6.xzdio ;;
gzip) deb_z=(-Zgzip -z6) rpm_payload=w6.gzdio ;;
*) die "PKG_COMPRESSION must be xz or gzip" ;;
esac
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

out=${out:-$top/target/packages}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vmagent-pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- generated files ----------------------------------------------------------------
gen=$work/gen
mkdir -p "$gen"
"$docs_binary" man | gzip -9n >"$gen/vmagent.1.gz"
for shell in bash zsh fish; do
    "$docs_binary" completions "$shell" >"$gen/completion.$shell"
    [ -s "$gen/completion.$shell" ] || die "empty $shell completion"
done
cat >"$gen/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vmagent

Files: *
Copyright: the vmagent authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not use
 this software except in compliance with the License. You may obtain a copy of the
 License at https://www.apache.org/licenses/LICENSE-2.0
 .
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

# stage DIR UNIT_DIR ZSH_DIR LICENSE_NAME: the installed tree.
stage() {
    local d=$1 units=$2 zsh=$3 license=$4
    install -d -m 0755 "$d/usr/bin" "$d$units/istio.service.d" "$d/etc/vmagent/config.d" \
        "$d/usr/share/man/man1" "$d/usr/share/bash-completion/completions" "$d$zsh" \
        "$d/usr/share/fish/vendor_completions.d" "$d/usr/share/doc/vmagent"
    install -m 0755 "$binary" "$d/usr/bin/vmagent"
    # A release binary is already stripped (Cargo.toml) and packaged byte for byte; a
    # debug one (tests) is stripped here, 10x smaller.
    if grep -q -e ' \.symtab ' -e ' \.debug_' <<<"$sections"; then
        strip --strip-all "$d/usr/bin/vmagent" 2>/dev/null || true
    fi
    install -m 0644 "$top/systemd/vmagent.service" "$d$units/vmagent.service"
    install -m 0644 "$top/systemd/istio.service.d/10-vmagent.conf" "$d$units/istio.service.d/10-vmagent.conf"
    # 0600: a [token] provider makes the config name what runs as root and where the
    # credential is, and vmagent then refuses a config others can read (issue 14).
    install -m 0600 "$here/config.toml" "$d/etc/vmagent/config.toml"
    install -m 0644 "$gen/vmagent.1.gz" "$d/usr/share/man/man1/vmagent.1.gz"
    install -m 0644 "$gen/completion.bash" "$d/usr/share/bash-completion/completions/vmagent"
    install -m 0644 "$gen/completion.zsh" "$d$zsh/_vmagent"
    install -m 0644 "$gen/completion.fish" "$d/usr/share/fish/vendor_completions.d/vmagent.fish"
    install -m 0644 "$top/README.md" "$d/usr/share/doc/vmagent/README.md"
    install -m 0644 "$gen/copyright" "$d/usr/share/doc/vmagent/$license"
    find "$d" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

# --- .deb ---------------------------------------------------------------------------
deb=$work/deb
stage "$deb" /lib/systemd/system /usr/share/zsh/vendor-completions copyright
installed_size=$(du -s -k --apparent-size "$deb" | cut -f1)
install -d -m 0755 "$deb/DEBIAN"
(cd "$deb" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum) >"$deb/DEBIAN/md5sums"
cat >"$deb/DEBIAN/control" <<EOF
Package: vmagent
Version: $pkg_version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Recommends: systemd
Section: admin
Priority: optional
Description: onboards this VM into an Istio service mesh
 vmagent installs the bundle that \`istioctl x workload entry configure\` writes
 (cluster.env, istio-token, mesh.yaml, root-cert.pem, hosts) with the right paths,
 modes and owners as one transaction, installs the istio-sidecar package, starts the
 istio service and reports the proxy's health.
 .
 \`vmagent apply BUNDLE\` does it once (e.g. from cloud-init); vmagent.service
 (\`vmagent daemon\`) keeps the VM in the mesh. The package does not enable or start
 vmagent.service: enable it after writing /etc/vmagent/config.d/ and the bundle.
EOF
echo /etc/vmagent/config.toml >"$deb/DEBIAN/conffiles"

# Maintainer scripts: POSIX sh (dpkg/rpm --root run them chrooted with the root's
# /bin/sh), systemctl only when systemd runs, never enable or start.
cat >"$deb/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# vmagent postinst: systemd re-reads vmagent.service and the istio.service drop-in.
# vmagent.service is not enabled or started here: cloud-init or the operator does that
# after writing /etc/vmagent/config.d/ and the bundle.
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ -n "$2" ]; then
        # Upgrade: a running daemon moves to the new binary; a stopped one stays stopped.
        systemctl try-restart --no-block vmagent.service || true
    fi
fi
exit 0
EOF
cat >"$deb/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# vmagent prerm: on removal (not upgrade) stop and disable vmagent.service. The istio
# service keeps running: the mesh does not depend on vmagent being up.
set -e
if [ "$1" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop vmagent.service || true
    fi
    # Offline too (an image being built): no dangling multi-user.target link. (No
    # `command -v ... >/dev/null`: a chroot may have no /dev.)
    if [ -x /usr/bin/systemctl ] || [ -x /bin/systemctl ]; then
        systemctl disable vmagent.service || true
    fi
fi
exit 0
EOF
cat >"$deb/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# vmagent postrm: systemd forgets vmagent.service and the istio.service drop-in.
set -e
case "$1" in
remove | purge)
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
    ;;
esac
exit 0
EOF
chmod 0755 "$deb/DEBIAN/postinst" "$deb/DEBIAN/prerm" "$deb/DEBIAN/postrm"
chmod 0644 "$deb/DEBIAN/control" "$deb/DEBIAN/conffiles" "$deb/DEBIAN/md5sums"
touch -h -d "@$SOURCE_DATE_EPOCH" "$deb/DEBIAN" "$deb/DEBIAN"/*
deb_out=$out/vmagent_${pkg_version}_${arch}.deb
dpkg-deb --root-owner-group "${deb_z[@]}" --build "$deb" "$deb_out" >&2

# --- .rpm ---------------------------------------------------------------------------
rpmtop=$work/rpm
rpmstage=$work/rpm-stage
stage "$rpmstage" /usr/lib/systemd/system /usr/share/zsh/site-functions LICENSE
mkdir -p "$rpmtop/SPECS"
spec=$rpmtop/SPECS/vmagent.spec
cat >"$spec" <<EOF
Name: vmagent
Version: $pkg_version
Release: 1
Summary: Onboards this VM into an Istio service mesh
License: Apache-2.0
Packager: $maintainer
# The architecture comes from \`rpmbuild --target $rpm_arch\`: a BuildArch other than
# the build machine's is refused ("No compatible architectures found for build").
# The shared-library requirements (glibc, libgcc_s) are found by rpm; nothing is provided.
AutoReq: yes
AutoProv: no

# The binary is packaged as built: no debuginfo subpackage, no stripping or
# build-id links (the files are staged, not compiled, here).
%global debug_package %{nil}
%global __os_install_post %{nil}
%define _build_id_links none

%description
vmagent installs the bundle that 'istioctl x workload entry configure' writes
(cluster.env, istio-token, mesh.yaml, root-cert.pem, hosts) with the right paths,
modes and owners as one transaction, installs the istio-sidecar package, starts the
istio service and reports the proxy's health.

'vmagent apply BUNDLE' does it once (e.g. from cloud-init); vmagent.service
('vmagent daemon') keeps the VM in the mesh. The package does not enable or start
vmagent.service: enable it after writing /etc/vmagent/config.d/ and the bundle.

%install
mkdir -p %{buildroot}
cp -a '$rpmstage'/. %{buildroot}/

%post
# Not enabled or started: cloud-init or the operator does that after writing the config.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi

%preun
# On removal (not upgrade): stop and disable; the istio service keeps running.
if [ "\$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop vmagent.service || :
    fi
    # Offline too (an image being built); no /dev/null needed in a chroot.
    if [ -x /usr/bin/systemctl ] || [ -x /bin/systemctl ]; then
        systemctl disable vmagent.service || :
    fi
fi

%postun
# After an upgrade a running daemon moves to the new binary; a stopped one stays stopped.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "\$1" -ge 1 ]; then
        systemctl try-restart --no-block vmagent.service || :
    fi
fi

%files
%defattr(-,root,root,-)
%attr(0755,root,root) /usr/bin/vmagent
/usr/lib/systemd/system/vmagent.service
%dir /usr/lib/systemd/system/istio.service.d
/usr/lib/systemd/system/istio.service.d/10-vmagent.conf
%dir /etc/vmagent
%attr(0600,root,root) %config(noreplace) /etc/vmagent/config.toml
%dir /etc/vmagent/config.d
/usr/share/man/man1/vmagent.1.gz
/usr/share/bash-completion/completions/vmagent
/usr/share/zsh/site-functions/_vmagent
/usr/share/fish/vendor_completions.d/vmagent.fish
%dir /usr/share/doc/vmagent
%doc /usr/share/doc/vmagent/README.md
%license /usr/share/doc/vmagent/LICENSE
EOF
rpmbuild -bb --quiet \
    --define "_topdir $rpmtop" \
    --define "_binary_payload $rpm_payload" \
    --define "_buildhost reproducible" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    --target "$rpm_arch" \
    "$spec" >&2
rpm_out=$out/vmagent-${pkg_version}-1.${rpm_arch}.rpm
cp "$rpmtop/RPMS/$rpm_arch/$(basename "$rpm_out")" "$rpm_out"

echo "$deb_out"
echo "$rpm_out"
