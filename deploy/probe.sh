#!/usr/bin/env bash
# lathe-probe URL: exits 0 when an HTTP GET of URL (http://HOST:PORT/PATH) answers with a 2xx status,
# 1 otherwise. The image's healthcheck (compose.yaml) without curl or wget in the image: bash's
# /dev/tcp, one HTTP/1.1 request, 5 s at most for the answer.
set -euo pipefail
url=${1:?usage: lathe-probe http://HOST:PORT/PATH}
rest=${url#http://}
authority=${rest%%/*}
path=/
[[ $rest == */* ]] && path=/${rest#*/}
host=${authority%:*}
port=${authority##*:}
exec 3<>"/dev/tcp/$host/$port"
printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$authority" >&3
read -r -t 5 _ status _ <&3
[[ $status == 2?? ]]
