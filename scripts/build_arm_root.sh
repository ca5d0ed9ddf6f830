#!/usr/bin/env bash
# Build the emulated-ARM device used by `transport = "qemu"` devices: an aarch64 Python 3.11 root run
# with qemu-user (qemu-aarch64-static -L ROOT), plus aarch64 wheels of numpy, onnxruntime,
# ai-edge-litert (and openvino). Everything comes from Debian's packages and PyPI; nothing global is
# changed (no dpkg --add-architecture, no binfmt_misc). Recipe and traps: docs/DEVICES.md and
# ../shared/docs/ARM_EMULATION.md.
#
#   scripts/build_arm_root.sh            # builds (or finds) ${EDGEKIT_CACHE:-$HOME/.cache/edgekit}/arm64
#
# Idempotent: each step leaves a stamp file and is skipped when its stamp is there; re-running after an
# interrupted build redoes only the unfinished step. Environment:
#   EDGEKIT_CACHE        cache root (default $HOME/.cache/edgekit); the root lands in $EDGEKIT_CACHE/arm64
#   EDGEKIT_ARM_OPENVINO 0 to skip the OpenVINO wheel (~100 MB; optional: bundles for openvino targets
#                        are x86 here), default 1
#   PYTHON               interpreter whose pip downloads the wheels (default: the repo's .venv, else python3)
#
# Layout of $EDGEKIT_CACHE/arm64:
#   bin/qemu-aarch64-static      from Debian's qemu-user-static (the rest of the package is dropped)
#   rootfs/                      arm64 libc + Python 3.11 (dpkg -x of arm64 .debs)
#   cpu/<model>/                 what `-L` points at: symlinks into rootfs/ plus a fake proc/cpuinfo
#                                for that CPU model (cortex-a72 = rpi4, neoverse-n1 = arm64 server)
#   site-packages/               aarch64 wheels (PYTHONPATH)
#   python3.11                   -> rootfs/usr/bin/python3.11-qemu, a host shell wrapper that runs the
#                                aarch64 python under qemu; the harness's trial subprocesses re-execute
#                                it (no binfmt_misc registration is needed)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${EDGEKIT_CACHE:-$HOME/.cache/edgekit}"
W="$CACHE/arm64"
OPENVINO="${EDGEKIT_ARM_OPENVINO:-1}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
T0=$(date +%s)
say() { echo "build_arm_root: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(uname -m)" = "x86_64" ] || say "warning: this recipe is tested on x86_64 hosts (this is $(uname -m))"
command -v apt-get >/dev/null || die "apt-get not found: the root is built from Debian packages (Debian/Ubuntu host needed)"
command -v dpkg >/dev/null || die "dpkg not found"
mkdir -p "$W"

# Versions of the wheels: the ones pinned for the dev machine (requirements-lock.txt), so the device
# runs the runtime the bundle was converted and checked with.
pin() {  # pin NAME -> NAME==VERSION from the lock file, else NAME
    local v
    v=$(grep -iE "^$1==" "$REPO/requirements-lock.txt" 2>/dev/null | head -1 | cut -d= -f3 || true)
    if [ -z "$v" ] && [ "$1" = numpy ]; then
        v=$("$PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
    fi
    if [ -n "$v" ]; then echo "$1==$v"; else echo "$1"; fi
}

# ---------------------------------------------------------------- 1. qemu-aarch64-static
CHANGED=0
if [ ! -x "$W/bin/qemu-aarch64-static" ]; then
    CHANGED=1
    say "qemu: downloading Debian's qemu-user-static"
    tmp=$(mktemp -d "$W/.qemu.XXXXXX")
    (cd "$tmp" && apt-get -o APT::Sandbox::User=root download -q qemu-user-static >/dev/null) \
        || die "apt-get download qemu-user-static failed (run 'apt-get update' first?)"
    dpkg -x "$tmp"/qemu-user-static_*.deb "$tmp/x"
    mkdir -p "$W/bin"
    cp "$tmp/x/usr/bin/qemu-aarch64-static" "$W/bin/.qemu-aarch64-static.tmp"
    mv "$W/bin/.qemu-aarch64-static.tmp" "$W/bin/qemu-aarch64-static"
    rm -rf "$tmp"
fi

# ---------------------------------------------------------------- 2. arm64 root with Python 3.11
PKGS="libc6 libgcc-s1 libstdc++6 gcc-12-base libcrypt1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0
      liblzma5 libzstd1 libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libnsl2 libtirpc3
      libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 libdb5.3 libgdbm6
      libgomp1 libpython3.11-minimal libpython3.11-stdlib python3.11-minimal"
if [ ! -f "$W/.rootfs.ok" ]; then
    CHANGED=1
    say "rootfs: downloading arm64 packages through a private apt state (nothing global changes)"
    A="$W/apt"
    mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/parts" "$W/debs"
    touch "$A/status"
    found=0
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
        [ -f "$f" ] || continue
        cp "$f" "$A/parts/"; found=1
    done
    [ "$found" = 1 ] || die "no apt sources in /etc/apt (sources.list.d/*.sources or sources.list)"
    APT=(-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o Dir::Etc::SourceList=/dev/null
         -o "Dir::Etc::SourceParts=$A/parts" -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache"
         -o "Dir::State::Status=$A/status" -o APT::Sandbox::User=root -q)
    apt-get "${APT[@]}" update >/dev/null || die "apt-get update for arm64 failed"
    # shellcheck disable=SC2086
    (cd "$W/debs" && apt-get "${APT[@]}" download $PKGS >/dev/null) || die "apt-get download (arm64) failed"
    rm -rf "$W/rootfs.tmp"
    mkdir -p "$W/rootfs.tmp"
    for deb in "$W"/debs/*_arm64.deb "$W"/debs/*_all.deb; do
        [ -f "$deb" ] || continue
        dpkg -x "$deb" "$W/rootfs.tmp"
    done
    [ -x "$W/rootfs.tmp/usr/bin/python3.11" ] || die "python3.11 missing from the unpacked arm64 packages"
    rm -rf "$W/rootfs"
    mv "$W/rootfs.tmp" "$W/rootfs"
    rm -rf "$W/debs" "$A/cache/archives"
    touch "$W/.rootfs.ok"
fi

# ---------------------------------------------------------------- 3. per-CPU views with a fake cpuinfo
# Trap: bookworm's qemu 7.2 passes the host's x86 /proc/cpuinfo through; onnxruntime then segfaults
# on import and LiteRT on invoke. `-L ROOT` redirects the open to ROOT/proc/cpuinfo. A core must not
# claim more than the -cpu model emulates (ORT enables dot-product from the part number alone), so
# each CPU model gets its own view of the root: symlinks to rootfs/* plus its own proc/cpuinfo.
NCPU=$(nproc 2>/dev/null || echo 1)
cpuinfo() {  # cpuinfo PART VARIANT REVISION FEATURES
    local i
    for ((i = 0; i < NCPU; i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$4"
        printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$2" "$1" "$3"
    done
}
for model in cortex-a72 neoverse-n1; do
    V="$W/cpu/$model"
    mkdir -p "$V/proc"
    for entry in "$W"/rootfs/*; do
        name=$(basename "$entry")
        [ "$name" = proc ] && continue
        ln -sfn "../../rootfs/$name" "$V/$name"
    done
    case $model in
        cortex-a72)  cpuinfo 0xd08 0x0 3 "fp asimd evtstrm crc32 cpuid" ;;
        neoverse-n1) cpuinfo 0xd0c 0x3 1 "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
    esac > "$V/proc/cpuinfo.tmp"
    mv "$V/proc/cpuinfo.tmp" "$V/proc/cpuinfo"
done

# ---------------------------------------------------------------- 4. the python wrapper
# The harness runs each trial in a fresh process by re-executing sys.executable. Without binfmt_misc
# the host kernel cannot exec an aarch64 ELF, so sys.executable must be something it can exec: this
# host shell script (qemu's -0 sets the guest's argv[0], from which Python derives sys.executable).
# It lives in rootfs/usr/bin so Python finds its stdlib beside it (the lib/python3.11 landmark).
# EDGEKIT_QEMU_CPU (or QEMU_CPU) picks the CPU model and with it the cpuinfo view; default cortex-a72.
PYW="$W/rootfs/usr/bin/python3.11-qemu"
cat > "$PYW.tmp" <<EOF
#!/bin/sh
# aarch64 Python 3.11 under qemu-user (written by scripts/build_arm_root.sh)
W="$W"
CPU="\${EDGEKIT_QEMU_CPU:-\${QEMU_CPU:-cortex-a72}}"
[ -d "\$W/cpu/\$CPU" ] || { echo "python3.11 (qemu): no root view for CPU model \$CPU in \$W/cpu" >&2; exit 2; }
export QEMU_CPU="\$CPU"
export PYTHONPATH="\$W/site-packages\${PYTHONPATH:+:\$PYTHONPATH}"
export EDGEKIT_EMULATED=1
exec "\$W/bin/qemu-aarch64-static" -L "\$W/cpu/\$CPU" -0 "\$W/rootfs/usr/bin/python3.11-qemu" "\$W/rootfs/usr/bin/python3.11" "\$@"
EOF
chmod +x "$PYW.tmp"
mv "$PYW.tmp" "$PYW"
ln -sfn "rootfs/usr/bin/python3.11-qemu" "$W/python3.11"

# ---------------------------------------------------------------- 5. aarch64 wheels
WHEELS="$(pin numpy) $(pin onnxruntime) $(pin ai-edge-litert) $(pin tokenizers)"
[ "$OPENVINO" = 1 ] && WHEELS="$WHEELS $(pin openvino)"
STAMP="$W/.wheels.ok"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WHEELS" ]; then
    CHANGED=1
    say "wheels (aarch64): $WHEELS"
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (set PYTHON=/path/to/python3 with pip)"
    PLATS=()
    # OpenVINO 2025+ ships only manylinux_2_35 aarch64 wheels: without that tag pip silently falls
    # back to 2024.0. glibc in the root is bookworm's 2.36, so every tag up to 2_36 is honest.
    for t in manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_27_aarch64 manylinux_2_28_aarch64 \
             manylinux_2_31_aarch64 manylinux_2_34_aarch64 manylinux_2_35_aarch64 manylinux_2_36_aarch64; do
        PLATS+=(--platform "$t")
    done
    rm -rf "$W/site-packages.tmp"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-compile --target "$W/site-packages.tmp" \
        --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 "${PLATS[@]}" $WHEELS \
        || die "pip could not fetch aarch64 wheels for: $WHEELS"
    rm -rf "$W/site-packages"
    mv "$W/site-packages.tmp" "$W/site-packages"
    echo "$WHEELS" > "$STAMP"
fi

# ---------------------------------------------------------------- 6. smoke test
# Once after every (re)build, or when asked (EDGEKIT_ARM_CHECK=1): importing everything under
# emulation takes 10-40 s.
MODS="numpy onnxruntime ai_edge_litert.interpreter"
[ "$OPENVINO" = 1 ] && MODS="$MODS openvino"
if [ "$CHANGED" = 1 ] || [ ! -f "$W/.smoke.ok" ] || [ "$(cat "$W/.smoke.ok")" != "$MODS" ] \
        || [ "${EDGEKIT_ARM_CHECK:-0}" = 1 ]; then
    say "smoke test under qemu (cortex-a72): import $MODS"
    rm -f "$W/.smoke.ok"
    EDGEKIT_QEMU_CPU=cortex-a72 "$W/python3.11" -c "
import importlib, platform, sys
assert platform.machine() == 'aarch64', platform.machine()
for m in sys.argv[1:]:
    importlib.import_module(m)
import numpy, onnxruntime
print('python', platform.python_version(), platform.machine(), 'numpy', numpy.__version__,
      'onnxruntime', onnxruntime.__version__, 'executable', sys.executable, file=sys.stderr)
" $MODS || die "the emulated python could not import $MODS"
    echo "$MODS" > "$W/.smoke.ok"
fi
say "ready in $(( $(date +%s) - T0 )) s: $W ($(du -sh "$W" 2>/dev/null | cut -f1))"
echo "$W"

