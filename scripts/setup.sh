#!/usr/bin/env bash
# Set up twinvla_ros on a fresh Debian/Ubuntu machine: system libraries (apt) and a .venv with
# the pinned requirements. Safe to run again: every step is skipped when already done.
#
#   scripts/setup.sh            # sim + tests on a machine without ROS
#   source /opt/ros/jazzy/setup.bash && scripts/setup.sh
#                               # robot PC: reuse the distribution's rclpy and messages
#
# Environment: PYTHON (interpreter for the venv, default python3), VENV (default .venv),
# TWINVLA_SKIP_APT=1 to skip apt (no root, or libraries already present).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
APT_PACKAGES=(libusb-1.0-0 libegl1 libgl1-mesa-dri libosmesa6 ffmpeg iproute2)

say() { printf '[setup] %s\n' "$*"; }

install_system_libraries() {
  [ "${TWINVLA_SKIP_APT:-0}" = 1 ] && { say "skipping apt (TWINVLA_SKIP_APT=1)"; return; }
  command -v apt-get >/dev/null || { say "no apt-get: install ${APT_PACKAGES[*]} yourself"; return; }
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && { say "system libraries present"; return; }
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  say "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

create_venv() {
  local flags=()
  if [ -n "${ROS_DISTRO:-}" ]; then
    # A sourced ROS 2 distribution provides rclpy, messages, launch and message_filters.
    flags+=(--system-site-packages)
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PYTHON --version) ${flags[*]:-}"
    "$PYTHON" -m venv "${flags[@]}" "$VENV"
  fi
}

install_requirements() {
  local req=requirements.txt
  if [ -n "${ROS_DISTRO:-}" ]; then
    say "ROS 2 $ROS_DISTRO is sourced: using its rclpy instead of the PyPI wheels"
    req=$(mktemp)
    sed '/^# --- ROS 2 client library/,/^# --- end of ROS 2 block/d' requirements.txt > "$req"
  fi
  local stamp="$VENV/.requirements.sha256"
  local want
  want=$(cat "$req" setup.py | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "requirements up to date"
    return
  fi
  say "installing requirements (first run: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$req"
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
}

install_system_libraries
create_venv
install_requirements
say "ready: $VENV/bin/twinvla-ros --help"
