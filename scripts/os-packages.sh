#!/usr/bin/env bash
# Make sure the OS can build mysqlclient (headers + pkg-config). On Debian as
# root it installs them; elsewhere it says exactly what to run.
set -euo pipefail
if pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists libmariadb 2>/dev/null; then
    exit 0
fi
packages="default-libmysqlclient-dev pkg-config build-essential"
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing OS packages for mysqlclient: $packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || true
    apt-get install -y -q $packages >/dev/null
    exit 0
fi
cat >&2 <<MSG
mysqlclient needs the MySQL/MariaDB client headers and pkg-config. Install them, then run make again:
  Debian/Ubuntu:  sudo apt-get install $packages
  Fedora/RHEL:    sudo dnf install mariadb-connector-c-devel pkgconf-pkg-config gcc
  macOS:          brew install mysql-client pkg-config
MSG
exit 1
