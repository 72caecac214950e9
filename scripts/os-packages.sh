#!/usr/bin/env bash
# Make sure the OS has what a make target needs. On Debian as root it installs
# the packages; elsewhere it says exactly what to run.
#   scripts/os-packages.sh           headers and pkg-config to build mysqlclient
#   scripts/os-packages.sh browser   Chromium and its driver, for the dashboard's browser test
#   scripts/os-packages.sh promtool  Prometheus' promtool, to check /metrics and the alert rules
set -euo pipefail
need="${1:-mysqlclient}"
case "$need" in
mysqlclient)
    if pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists libmariadb 2>/dev/null; then
        exit 0
    fi
    packages="default-libmysqlclient-dev pkg-config build-essential"
    why="mysqlclient needs the MySQL/MariaDB client headers and pkg-config"
    others="  Fedora/RHEL:    sudo dnf install mariadb-connector-c-devel pkgconf-pkg-config gcc
  macOS:          brew install mysql-client pkg-config"
    ;;
browser)
    # The test drives /usr/bin/chromium through /usr/bin/chromedriver (Debian's paths).
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
        exit 0
    fi
    packages="chromium chromium-driver fonts-liberation"
    why="the dashboard's browser test needs Debian's Chromium and ChromeDriver"
    others=""
    ;;
promtool)
    if command -v promtool >/dev/null 2>&1; then
        exit 0
    fi
    # Debian ships promtool only with the server's package; the tests need only promtool.
    packages="--no-install-recommends prometheus"
    why="the monitoring tests check /metrics and the alert rules with Prometheus' promtool"
    others="  elsewhere:      promtool from a Prometheus release, on the PATH"
    ;;
*)
    echo "usage: $0 [mysqlclient|browser|promtool]" >&2
    exit 2
    ;;
esac
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing OS packages ($why): $packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || true
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -q $packages >/dev/null
    exit 0
fi
{
    echo "$why. Install them, then run make again:"
    echo "  Debian/Ubuntu:  sudo apt-get install $packages"
    if [ -n "$others" ]; then echo "$others"; fi
} >&2
exit 1
