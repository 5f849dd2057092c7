#!/usr/bin/env bash
# Starts (or stops) a 3-member etcd cluster on loopback for keel-bench etcd.
#   bench/etcd-cluster.sh start DATA_DIR   # clients on 127.0.0.1:2379, :22379, :32379
#   bench/etcd-cluster.sh stop DATA_DIR
# DATA_DIR must be on a real disk file system (not tmpfs), so that etcd's fdatasync is real.
# Needs Debian's etcd-server (apt-get install -y etcd-server).
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?data directory}
cluster="m1=http://127.0.0.1:2380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"
case "$cmd" in
start)
    command -v etcd >/dev/null || { echo "etcd not installed (apt-get install -y etcd-server)" >&2; exit 1; }
    mkdir -p "$dir"
    i=0
    for port in 2379 22379 32379; do
        i=$((i + 1))
        peer=$((port + 1))
        rm -rf "$dir/m$i"
        etcd --name "m$i" --data-dir "$dir/m$i" \
            --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
            --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token keel-bench \
            --log-level error --logger zap >"$dir/m$i.log" 2>&1 &
        echo $! >"$dir/m$i.pid"
    done
    for _ in $(seq 1 100); do
        if ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 \
            endpoint health >/dev/null 2>&1; then
            echo "etcd cluster up (data in $dir)"
            exit 0
        fi
        sleep 0.2
    done
    echo "etcd cluster did not become healthy; logs in $dir/m*.log" >&2
    exit 1
    ;;
stop)
    for i in 1 2 3; do
        if [ -f "$dir/m$i.pid" ]; then
            kill "$(cat "$dir/m$i.pid")" 2>/dev/null || true
            rm -f "$dir/m$i.pid"
        fi
    done
    ;;
*) echo "usage: $0 start|stop DATA_DIR" >&2; exit 2 ;;
esac
