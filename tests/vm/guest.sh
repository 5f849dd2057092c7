#!/bin/bash
# Runs inside the soft-RoCE test VM (started by the image's /init; tests/vm/run copies it into
# its run directory, which the guest sees at the same path as the host over 9p).
# 1. brings up rxe0 on the virtio NIC, an fsdax NVDIMM as ext4 -o dax at /mnt/pmem and, when the
#    VM has a second NVDIMM, a device-DAX region /dev/daxX.Y;
# 2. the smoke test: one-sided RDMA WRITE between two processes (perftest's ib_write_lat),
#    several processes on rxe0 at once writing into device-DAX (rdma_dax_check), MAP_SYNC on the
#    DAX mount (mapsync), and records what it measured;
# 3. then, by mode: every vm_* test binary listed in tests.list, or the developer's command
#    (cmd.sh), or ib_write_lat over several message sizes.
# Results go to $RUN/results/ (read by tests/vm/run, which decides the exit status).
RUN=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$RUN/guest.env" # KEEL_VM_MODE, KEEL_VM_SMOKE, KEEL_VM_TEST_TIMEOUT, KEEL_VM_TEST_ARGS, ...
export PATH=/usr/sbin:/usr/bin:$RUN/bin
export HOME=/root TMPDIR=/tmp
[ -d "$RUN/lib" ] && export LD_LIBRARY_PATH=$RUN/lib
# this guest's address (rxe traffic to it loops back inside the guest), and with --pair its role
# (a or b) and the other VM's address
GIP=192.0.2.1 ROLE="" PEER=""
for arg in $(cat /proc/cmdline); do
    case $arg in
        keel_ip=*) GIP=${arg#keel_ip=} ;;
        keel_peer=*) PEER=${arg#keel_peer=} ;;
        keel_role=*) ROLE=${arg#keel_role=} ;;
    esac
done
R=$RUN/results${ROLE:+-$ROLE}
mkdir -p "$R"
say() { echo "keel-vm [$(cut -d' ' -f1 /proc/uptime)s] $*"; }
fact() { echo "$*" >>"$R/facts"; }

# wait until a TCP port listens in the guest (perftest's server before its client connects)
wait_listen() {
    local hex i
    hex=$(printf ':%04X ' "$1")
    for i in $(seq 1 100); do
        grep -q "$hex.* 0A " /proc/net/tcp 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

setup_rdma() {
    ip link set lo up
    ip link set eth0 up || return 1
    ip addr add "$GIP/24" dev eth0 || return 1
    rdma link add rxe0 type rxe netdev eth0 || return 1
    say "rxe0 added"
    local i
    for i in $(seq 1 100); do
        ibv_devinfo -d rxe0 2>/dev/null | grep -q PORT_ACTIVE && break
        sleep 0.1
    done
    ibv_devinfo -d rxe0 | grep -E 'hca_id|transport|state|active_mtu' || return 1
    ibv_devinfo -d rxe0 | grep -q PORT_ACTIVE || return 1
    # perftest wants the RoCEv2 GID index of the IPv4 address (::ffff:192.0.2.1)
    local g
    for g in /sys/class/infiniband/rxe0/ports/1/gids/*; do
        case $(cat "$g" 2>/dev/null) in
            0000:0000:0000:0000:0000:ffff:*) GID_INDEX=${g##*/} && break ;;
        esac
    done
    [ -n "${GID_INDEX:-}" ] || {
        say "rxe0 has no IPv4-mapped GID"
        return 1
    }
    say "rxe0 up on eth0 ($GIP), RoCEv2 GID index $GID_INDEX"
}

setup_pmem() {
    # QEMU's label-less NVDIMM comes up as a raw namespace, which cannot do DAX: reconfigure
    ndctl create-namespace --force --reconfig=namespace0.0 --mode=fsdax --map=dev >/tmp/ndctl0.log 2>&1 || {
        cat /tmp/ndctl0.log
        return 1
    }
    local blk
    blk=$(grep -o '"blockdev":"[^"]*"' /tmp/ndctl0.log | cut -d'"' -f4)
    [ -b "/dev/$blk" ] || {
        say "no fsdax block device after ndctl: $(cat /tmp/ndctl0.log)"
        return 1
    }
    mkfs.ext4 -q -F -b 4096 "/dev/$blk" || return 1
    mount -o dax "/dev/$blk" /mnt/pmem || return 1
    grep -q " /mnt/pmem ext4 .*dax" /proc/mounts || {
        say "/mnt/pmem is not mounted with dax: $(grep /mnt/pmem /proc/mounts)"
        return 1
    }
    say "fsdax: /dev/$blk mounted at /mnt/pmem ($(grep ' /mnt/pmem ' /proc/mounts | cut -d' ' -f4))"
    KEEL_DEVDAX=""
    if ndctl list -n namespace1.0 2>/dev/null | grep -q namespace1.0; then
        ndctl create-namespace --force --reconfig=namespace1.0 --mode=devdax --map=dev >/tmp/ndctl1.log 2>&1 || {
            cat /tmp/ndctl1.log
            return 1
        }
        local chr
        chr=$(grep -o '"chardev":"[^"]*"' /tmp/ndctl1.log | head -1 | cut -d'"' -f4)
        [ -c "/dev/$chr" ] || {
            say "no device-DAX character device after ndctl: $(cat /tmp/ndctl1.log)"
            return 1
        }
        KEEL_DEVDAX=/dev/$chr
        say "device-DAX: $KEEL_DEVDAX ($(($(cat "/sys/bus/dax/devices/$chr/size") >> 20)) MiB, align $(cat "/sys/bus/dax/devices/$chr/align" 2>/dev/null || echo '?'))"
    fi
}

# ---- ib_write_lat server and client processes on rxe0: local_lat SIZE ITERS PORT leaves the
# client's output in /tmp/lat-client.log, the server's in /tmp/lat-server.log, and fails when
# either fails. perftest converts cycles to microseconds with a CPU clock it measures at start;
# on a loaded TCG host that measurement sometimes fails and every figure reads "inf": then the
# run is repeated (up to three times), as the WRITEs themselves were fine.
local_lat() {
    local size=$1 iters=$2 port=$3 s c try
    for try in 1 2 3; do
        timeout 120 ib_write_lat -F -d rxe0 -x "$GID_INDEX" -s "$size" -n "$iters" -p "$port" >/tmp/lat-server.log 2>&1 &
        s=$!
        wait_listen "$port" || say "ib_write_lat server did not listen on port $port"
        timeout 120 ib_write_lat -F -d rxe0 -x "$GID_INDEX" -s "$size" -n "$iters" -p "$port" "$GIP" >/tmp/lat-client.log 2>&1
        c=$?
        wait $s
        s=$?
        if [ $c != 0 ] || [ $s != 0 ]; then
            say "ib_write_lat ($size B) failed: client exit $c, server exit $s"
            cat /tmp/lat-client.log /tmp/lat-server.log
            return 1
        fi
        grep -q ' inf ' /tmp/lat-client.log || return 0
        say "ib_write_lat ($size B): perftest could not measure the CPU clock (figures read inf), run $try of 3"
    done
    return 0
}

# ---- --pair: one-sided RDMA WRITE from VM B to VM A over the socket network (A serves)
cross_vm() {
    local rc i
    if [ "$ROLE" = a ]; then
        say "smoke: ib_write_lat server for VM B ($PEER), 64 B x 500"
        timeout 180 ib_write_lat -F -d rxe0 -x "$GID_INDEX" -s 64 -n 500 -p 18520 >/tmp/x-server.log 2>&1
        rc=$?
        [ $rc = 0 ] || cat /tmp/x-server.log
    else
        say "smoke: ib_write_lat client to VM A ($PEER), 64 B x 500"
        rc=1
        for i in $(seq 1 90); do # until A's server listens (A may boot later)
            timeout 120 ib_write_lat -F -d rxe0 -x "$GID_INDEX" -s 64 -n 500 -p 18520 "$PEER" >/tmp/x-client.log 2>&1 && {
                rc=0
                break
            }
            grep -q -i "couldn't connect\|unable to connect\|connection refused" /tmp/x-client.log || break
            sleep 1
        done
        if [ $rc = 0 ]; then
            grep -A1 't_min' /tmp/x-client.log
            fact "ib_write_lat_64B_usec_cross_vm $(awk '/^ *64 /{print "min=" $3 " typical=" $5 " avg=" $6 " p99=" $8}' /tmp/x-client.log)"
        else cat /tmp/x-client.log; fi
    fi
    [ $rc = 0 ] || say "smoke: FAILED: ib_write_lat between the two VMs"
    return $rc
}

# ---- the smoke test: proves the device and the DAX mount work, before any Keel test runs
smoke() {
    local ok=0 s c
    say "smoke: one-sided RDMA WRITE between two processes (ib_write_lat server + client, 64 B x 500)"
    if local_lat 64 500 18515; then
        grep -A1 't_min' /tmp/lat-client.log
        # columns: #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%
        fact "ib_write_lat_64B_usec $(awk '/^ *64 /{print "min=" $3 " typical=" $5 " avg=" $6 " p99=" $8}' /tmp/lat-client.log)"
    else
        say "smoke: FAILED: one-sided RDMA WRITE between two processes"
        ok=1
    fi

    say "smoke: RDMA WRITE into an MR over ordinary memory"
    rdma_dax_check anon || ok=1
    if [ -n "$KEEL_DEVDAX" ]; then
        say "smoke: three processes at once on rxe0, each RDMA-WRITEs into its own 2 MiB of $KEEL_DEVDAX"
        local pids="" i
        for i in 0 1 2; do
            rdma_dax_check devdax "$KEEL_DEVDAX" $((i * 2 * 1024 * 1024)) &
            pids="$pids $!"
        done
        for i in $pids; do wait "$i" || ok=1; done
        [ $ok = 0 ] && fact "devdax_mr registered"
    else
        say "smoke: no device-DAX region in this VM (KEEL_VM_DEVDAX_MB=0?)"
    fi
    say "smoke: RDMA MR over a MAP_SYNC mapping of an fsdax file (informational: kernels refuse to pin fsdax pages)"
    rdma_dax_check fsdax /mnt/pmem/keel-smoke-mr
    case $? in
        0) fact "fsdax_mr registered" ;;
        3) fact "fsdax_mr refused" ;;
        *) fact "fsdax_mr error" ;;
    esac
    rm -f /mnt/pmem/keel-smoke-mr

    [ -z "$PEER" ] || cross_vm || ok=1

    say "smoke: MAP_SYNC on the DAX mount (must work) and on tmpfs (must be refused)"
    mapsync /mnt/pmem/keel-smoke-mapsync || ok=1
    mapsync /tmp/keel-smoke-mapsync
    if [ $? != 1 ]; then
        say "smoke: FAILED: MAP_SYNC was not refused on tmpfs, so the check proves nothing"
        ok=1
    fi
    rm -f /mnt/pmem/keel-smoke-mapsync /tmp/keel-smoke-mapsync
    return $ok
}

# env of every test binary and of the developer's command
test_env() {
    export KEEL_IN_VM=1 KEEL_RDMA_DEVICE=rxe0 KEEL_DAX_DIR=/mnt/pmem RUST_BACKTRACE=1 KEEL_VM_IP=$GIP
    if [ -n "$ROLE" ]; then export KEEL_VM_ROLE=$ROLE KEEL_VM_PEER_IP=$PEER; fi
    if [ -n "$KEEL_DEVDAX" ]; then export KEEL_DEVDAX; else unset KEEL_DEVDAX; fi
}

run_tests() {
    local name exe cwd t0 rc secs
    test_env
    while IFS=$'\t' read -r name exe cwd; do
        [ -n "$name" ] || continue
        say "=== test binary $name ($exe)"
        t0=$(cut -d' ' -f1 /proc/uptime)
        # shellcheck disable=SC2086
        (cd "$cwd" && CARGO_MANIFEST_DIR=$cwd timeout -k 5 "$KEEL_VM_TEST_TIMEOUT" "$exe" $KEEL_VM_TEST_ARGS) </dev/null 2>&1
        rc=$?
        secs=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN{printf "%.1f", b-a}')
        [ $rc = 124 ] && say "test binary $name timed out after ${KEEL_VM_TEST_TIMEOUT}s"
        [ $rc = 0 ] || tests_failed=1
        printf '%s\t%s\t%s\n' "$name" "$rc" "$secs" >>"$R/tests"
        say "--- $name: exit $rc in ${secs}s"
        # the next binary starts on an empty DAX mount
        rm -rf /mnt/pmem/* 2>/dev/null
    done <"$RUN/tests.list"
}

ib_write_lat_sweep() {
    local size s c
    say "ib_write_lat (RC, one-sided RDMA WRITE, server + client process on rxe0), ${KEEL_VM_IB_ITERS} iterations per size"
    for size in $KEEL_VM_IB_SIZES; do
        local_lat "$size" "$KEEL_VM_IB_ITERS" 18516 || return 1
        if [ "$size" = "${KEEL_VM_IB_SIZES%% *}" ]; then cat /tmp/lat-client.log; else grep -E "^ +$size " /tmp/lat-client.log; fi
    done
}

rc=0
step=setup
if ! setup_rdma; then
    say "SETUP FAILED: rxe0 did not come up"
    dmesg | tail -20
    rc=1
elif ! setup_pmem; then
    say "SETUP FAILED: NVDIMM / DAX setup"
    dmesg | tail -20
    rc=1
else
    fact "kernel $(uname -r)"
    fact "devdax ${KEEL_DEVDAX:-none}"
    if [ "$KEEL_VM_SMOKE" = 1 ]; then
        step=smoke
        if smoke; then echo 0 >"$R/smoke"; else
            echo 1 >"$R/smoke"
            rc=1
            say "SMOKE TEST FAILED: the VM or its RDMA/DAX devices are broken (not Keel); not running Keel's tests"
            dmesg | tail -20
        fi
    fi
    if [ $rc = 0 ]; then
        step=$KEEL_VM_MODE
        case $KEEL_VM_MODE in
            tests)
                tests_failed=0
                run_tests
                rc=$tests_failed
                ;;
            cmd)
                test_env
                (cd "$KEEL_VM_CWD" && bash "$RUN/cmd.sh") </dev/null
                rc=$?
                echo "$rc" >"$R/cmd"
                ;;
            ib-write-lat) ib_write_lat_sweep || rc=1 ;;
        esac
    fi
fi
say "guest done (step $step, status $rc)"
echo "$rc" >"$R/guest-rc"
sync
exit "$rc"
