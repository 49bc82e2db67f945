#!/usr/bin/env bash
# Builds SimplerEnv's own Python environment, .venv-simplerenv (QDEPTH_SIMPLERENV names another folder),
# where `qdepth-bench run --backend simpler_env` starts its env workers: SimplerEnv and ManiSkill2_real2sim
# at the commits SimplerEnv pins, SAPIEN 2.2.2 and numpy < 2 (constraints-simplerenv.txt), and this project
# without its dependencies. The main .venv keeps numpy 2 and ManiSkill3. Safe to run again.
#   SIMPLERENV_SOURCE  a folder with SimplerEnv-4ab7178.tar.gz and ManiSkill2_real2sim-ef7a4d4.tar.gz;
#                      default: ../shared/vendor beside the checkout where it holds them (CI), else the
#                      commits are cloned from GitHub (SIMPLERENV_SOURCE=github forces that). The vendor
#                      copy lacks the stage meshes and a few object meshes (its README): runs then need
#                      --stand-ins, and tasks needing those meshes refuse with one line.
# Called by scripts/setup.sh when QDEPTH_EXTRAS names simpler_env; needs root for its apt packages.
set -euo pipefail
cd "$(dirname "$0")/.."
simplerenv_commit=4ab7178e83e84ee06894034ec6dbf9e7aad1e882
real2sim_commit=ef7a4d4fdf4b69f2c2154db5b15b9ac8dfe10682
venv="${QDEPTH_SIMPLERENV:-.venv-simplerenv}"
src="$venv/src"

# the Vulkan layer (built only where the driver needs it) is compiled against the Vulkan headers
missing=()
for p in gcc libvulkan-dev libvulkan1; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "setup_simplerenv: missing ${missing[*]}: run as root or apt-get install them" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

vendor="$(pwd)/../shared/vendor"
if [ -z "${SIMPLERENV_SOURCE:-}" ] && [ -f "$vendor/SimplerEnv-${simplerenv_commit:0:7}.tar.gz" ]; then
  SIMPLERENV_SOURCE="$vendor"
fi
if [ ! -f "$src/SimplerEnv/ManiSkill2_real2sim/setup.py" ]; then
  rm -rf "$src" && mkdir -p "$src"
  if [ -n "${SIMPLERENV_SOURCE:-}" ] && [ "$SIMPLERENV_SOURCE" != github ]; then
    echo "setup_simplerenv: SimplerEnv ${simplerenv_commit:0:7} from $SIMPLERENV_SOURCE"
    tar -xzf "$SIMPLERENV_SOURCE/SimplerEnv-${simplerenv_commit:0:7}.tar.gz" -C "$src"
    rmdir "$src/SimplerEnv/ManiSkill2_real2sim" 2>/dev/null || true
    tar -xzf "$SIMPLERENV_SOURCE/ManiSkill2_real2sim-${real2sim_commit:0:7}.tar.gz" -C "$src/SimplerEnv"
  else
    echo "setup_simplerenv: SimplerEnv ${simplerenv_commit:0:7} from GitHub"
    git clone -q https://github.com/simpler-env/SimplerEnv "$src/SimplerEnv"
    git -C "$src/SimplerEnv" checkout -q "$simplerenv_commit"
    git -C "$src/SimplerEnv" submodule update -q --init ManiSkill2_real2sim
    git -C "$src/SimplerEnv/ManiSkill2_real2sim" checkout -q "$real2sim_commit"
  fi
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints-simplerenv.txt)
"${pip[@]}" numpy setuptools gymnasium sapien pillow pyyaml msgpack
"${pip[@]}" -e "$src/SimplerEnv/ManiSkill2_real2sim" -e "$src/SimplerEnv"
# the env worker side of this project: it imports numpy, yaml, PIL and msgpack only
"${pip[@]}" --no-deps --no-build-isolation -e .
"$venv/bin/python" -m qdepth_bench.sims.simpler.environment configure
