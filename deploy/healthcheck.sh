#!/bin/bash
# Container HEALTHCHECK probe without curl: `healthcheck <port> [path]`.
# Sends `GET <path>` (default /healthz) to 127.0.0.1:<port> over bash's /dev/tcp and exits 0 on an
# HTTP 200 status line, 1 otherwise. The caller (Docker) bounds it with --timeout; `timeout` bounds
# it here too, so a hung peer cannot pile up probes.
set -euo pipefail
port="${1:?usage: healthcheck <port> [path]}"
path="${2:-/healthz}"
exec timeout 2 bash -c '
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
  printf "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" "$2" >&3 || exit 1
  IFS= read -r status <&3
  case "$status" in
    "HTTP/1."[01]" 200"*) exit 0 ;;
    *) echo "unhealthy: ${status:-no answer}" >&2; exit 1 ;;
  esac
' healthcheck "$port" "$path"
