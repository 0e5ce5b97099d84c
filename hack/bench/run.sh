#!/usr/bin/env bash
# Load runs of the decision API; docs/benchmarks.md says what they measure
# and holds the results.
#
#   1. Saturation, one after the other in the same run, the same request,
#      the same connections and durations: wrk against the floor
#      (hack/bench/floor, a minimal Go net/http JSON server), against
#      sallyport's POST /v1/decide (hack/bench/decide: the real handler,
#      engine, credential cache, RS256 verification and decision log), and
#      against OPA v1.22.4 running hack/bench/opa/policy.rego over the same
#      policies, with io.jwt.decode_verify and without a credential check;
#      hack/bench/grpcload against sallyport's ext_authz gRPC server (same
#      process, same engine). Before it, hack/bench/equiv checks that OPA
#      and sallyport decide the request and nine variants alike. Prints
#      req/s, p50, p99, p99.9 and the ratios to the floor and to OPA.
#   2. Latency at half load: hack/bench/load sends to /v1/decide at a fixed
#      rate, half of the req/s measured in 1, open-loop (latency counted from
#      when each request was due), and reports p50 to p99.9; then the same
#      against the floor at the same rate, as a control for the machine, and
#      against the floor's handler served from a process like sallyport's
#      (hack/bench/decide -handler floor: the same imports and compiled
#      store, so the same live heap), as a control for what the collector
#      costs a process of that size. Each server's live heap is printed.
#   3. Profiles (PROFILE=1): CPU profiles of both servers under wrk.
#   4. Engine (ENGINE_BENCH=1): go test -bench 'Decide' ./internal/decision/.
#   5. Scale (SCALE=1): 10, 100, 1,000 and 10,000 policies: decision
#      latency, snapshot build time and heap bytes per compiled policy
#      (go test -bench 'DecideScale|Build' ./internal/decision/ ./internal/store/).
#
# Environment, with defaults:
#   THREADS=1 CONNECTIONS=16 DURATION=15s   wrk's -t, -c, -d (both servers;
#                                           CONNECTIONS is also load's)
#   WARMUP=5s          wrk warm-up of each server before it is measured
#   POLICIES=10        ConnectionPolicies and ResourcePolicies in the store
#   DECISION_LOG=file  "file" (in this run's temporary directory) or
#                      "discard"; block mode either way
#   LOAD_RATE=         req/s of phase 2; default half of phase 1's
#   LOAD_DURATION=30s LOAD_WARMUP=5s
#   PROFILE=1 ENGINE_BENCH=1 BENCH_COUNT=1
#   OPA=1              measure OPA too; its binary is installed with
#                      go install github.com/open-policy-agent/opa@v1.22.4
#                      into $SALLYPORT_CACHE_DIR/opa/v1.22.4/bin (default
#                      ~/.cache/sallyport), outside the repository, once
#   GRPC=1             measure sallyport's ext_authz (gRPC) too
#   SCALE=0            1 runs phase 5 (a few minutes)
#   PIN=0              1 runs every server (floor, sallyport, OPA) on CPU 0
#                      with GOMAXPROCS=1, and leaves the other CPUs to the
#                      load generators: on a 2-core machine the generator
#                      otherwise competes with the server it measures, and
#                      the latency tail is the generator's as much as the
#                      server's. Throughputs are then one core's.
#   PIN_CPUS=0         with PIN=1, the CPUs (taskset -c list) the servers
#                      run on, with GOMAXPROCS set to their number: on a
#                      machine of 4 or more CPUs, PIN_CPUS=0-1 gives each
#                      server two processors that the generators do not
#                      use, which a 2-CPU machine cannot (see
#                      docs/benchmarks.md, "Where the due-time tail comes
#                      from")
#   RESULTS_DIR=       if set, raw outputs and the CPU profiles are kept there
#
# The saturation and half-load tables are printed again at the end.
#
# Needs wrk: installed with apt-get when missing and running as root. OPA's
# first install needs the Go module proxy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-5s}
POLICIES=${POLICIES:-10}
DECISION_LOG=${DECISION_LOG:-file}
LOAD_RATE=${LOAD_RATE:-}
LOAD_DURATION=${LOAD_DURATION:-30s}
LOAD_WARMUP=${LOAD_WARMUP:-5s}
PROFILE=${PROFILE:-1}
ENGINE_BENCH=${ENGINE_BENCH:-1}
BENCH_COUNT=${BENCH_COUNT:-1}
OPA=${OPA:-1}
GRPC=${GRPC:-1}
SCALE=${SCALE:-0}
PIN=${PIN:-0}
PIN_CPUS=${PIN_CPUS:-0}
OPA_VERSION=v1.22.4 # pinned: docs/benchmarks.md records results against it
SALLYPORT_CACHE_DIR=${SALLYPORT_CACHE_DIR:-$HOME/.cache/sallyport}
RESULTS_DIR=${RESULTS_DIR:-}

die() {
	echo "run.sh: $*" >&2
	exit 1
}
say() { printf '\n== %s\n' "$*"; }

# pin: the command prefix that puts a server on PIN_CPUS alone (PIN=1).
pin=()
if [[ $PIN == 1 ]]; then
	command -v taskset >/dev/null 2>&1 || die "PIN=1 needs taskset (util-linux)"
	pin_procs=$(taskset -c "$PIN_CPUS" nproc) || die "PIN_CPUS=$PIN_CPUS is not a CPU list taskset accepts on this machine"
	pin=(env GOMAXPROCS="$pin_procs" taskset -c "$PIN_CPUS")
	echo "run.sh: servers on CPUs $PIN_CPUS with GOMAXPROCS=$pin_procs"
fi

case $DECISION_LOG in
file | discard) ;;
*) die "DECISION_LOG must be \"file\" or \"discard\", not \"$DECISION_LOG\"" ;;
esac

# --- wrk ---------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
	if [[ $(id -u) -ne 0 ]]; then
		die "wrk is not installed and this is not root; install it first: sudo apt-get install -y wrk"
	fi
	echo "run.sh: installing wrk (apt-get install -y wrk)"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null ||
			die "apt-get update failed; install wrk by hand"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null ||
			die "apt-get install -y wrk failed; install wrk by hand"
	fi
	command -v wrk >/dev/null 2>&1 || die "wrk is still not on PATH after installing it"
fi

# --- OPA ------------------------------------------------------------------------
opa_bin=$SALLYPORT_CACHE_DIR/opa/$OPA_VERSION/bin/opa
if [[ $OPA == 1 && ! -x $opa_bin ]]; then
	echo "run.sh: installing OPA $OPA_VERSION into ${opa_bin%/opa} (go install, a few minutes, once)"
	mkdir -p "${opa_bin%/opa}"
	# From outside the module, so its go.mod plays no part.
	(cd / && GOBIN=${opa_bin%/opa} GOFLAGS='' go install "github.com/open-policy-agent/opa@$OPA_VERSION") ||
		die "go install github.com/open-policy-agent/opa@$OPA_VERSION failed"
fi

# --- temporary directory and cleanup -----------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sallyport-bench.XXXXXX")
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

keep() { # keep FILE...: copy raw outputs to RESULTS_DIR
	if [[ -n $RESULTS_DIR ]]; then
		cp "$@" "$RESULTS_DIR"/
	fi
}
if [[ -n $RESULTS_DIR ]]; then
	mkdir -p "$RESULTS_DIR"
fi

# --- machine -----------------------------------------------------------------
say "machine"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "cpus:     $(nproc) ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | sort | uniq -c | sed 's/^ *//' | paste -sd ';' -))"
echo "go:       $(go version)"
echo "wrk:      $(wrk -v 2>&1 | head -n1)"
if [[ $OPA == 1 ]]; then
	echo "opa:      $("$opa_bin" version | sed -n 's/^Version: //p') ($opa_bin)"
fi
echo "load avg: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; the machine is shared)"

# --- build ---------------------------------------------------------------------
say "build"
for prog in floor decide load grpcload equiv; do
	go build -o "$tmp/$prog" "./hack/bench/$prog"
done
echo "built floor, decide, load, grpcload and equiv into $tmp"

# start NAME BINARY ARGS...: starts a server with -addr 127.0.0.1:0 and
# -addr-file, waits until it listens, and sets addr to its address.
addr=
start() {
	local name=$1 bin=$2
	shift 2
	rm -f "$tmp/$name.addr"
	"${pin[@]}" "$bin" -addr 127.0.0.1:0 -addr-file "$tmp/$name.addr" "$@" 2>"$tmp/$name.log" &
	local pid=$!
	pids+=("$pid")
	local i
	for ((i = 0; i < 6000; i++)); do
		if [[ -s $tmp/$name.addr ]]; then
			addr=$(<"$tmp/$name.addr")
			echo "$name: pid $pid on $addr"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || {
			cat "$tmp/$name.log" >&2
			die "$name exited before it listened"
		}
		sleep 0.1
	done
	die "$name did not listen within 10 minutes"
}

# stop PID: SIGTERM, then wait for it.
stop() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# field LINE KEY: the value of KEY=value in LINE.
field() {
	local kv
	for kv in $1; do
		if [[ $kv == "$2="* ]]; then
			echo "${kv#*=}"
			return 0
		fi
	done
	die "no $2 in: $1"
}

# --- servers -------------------------------------------------------------------
say "servers"
decide_log=discard
if [[ $DECISION_LOG == file ]]; then
	decide_log=$tmp/decisions.log
fi
start floor "$tmp/floor"
floor_pid=${pids[-1]}
floor_url=http://$addr/v1/decide
grpc_args=()
if [[ $GRPC == 1 ]]; then
	grpc_args=(-grpc-addr 127.0.0.1:0 -grpc-addr-file "$tmp/grpc.addr")
fi
start decide "$tmp/decide" -policies "$POLICIES" -decision-log "$decide_log" -body-file "$tmp/body.json" \
	-opa-dir "$tmp/opa" "${grpc_args[@]}"
decide_pid=${pids[-1]}
decide_url=http://$addr/v1/decide
grpc_addr=
if [[ $GRPC == 1 ]]; then
	grpc_addr=$(<"$tmp/grpc.addr")
	echo "decide: ext_authz (gRPC) on $grpc_addr"
fi
sed -n 's/^decide: serving/  serving/p' "$tmp/decide.log"

body=$(<"$tmp/body.json")
[[ $body != *']==]'* ]] || die "the request body contains ]==] and cannot be quoted in Lua"
echo "request body: ${#body} bytes (a ${POLICIES}-policy store; token of $(($(cut -d'"' -f6 <<<"$body" | wc -c) - 1)) bytes)"

# free_port: a loopback TCP port nobody listens on now, for OPA, which does
# not say which port it picked.
free_port() {
	local p i
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "found no free port"
}

opa_pid='' opa_verified_url='' opa_unverified_url=''
if [[ $OPA == 1 ]]; then
	# The same policies and key as the decide server, as OPA data. OPA's
	# defaults, except two settings in its favour: the log level (at info
	# it logs every request) and the in-memory store keeping data as
	# evaluation values (--optimize-store-for-read-speed: 10-20% less CPU
	# per decision in opa bench here).
	opa_port=$(free_port)
	"${pin[@]}" "$opa_bin" run --server --addr "127.0.0.1:$opa_port" --log-level error --optimize-store-for-read-speed \
		hack/bench/opa/policy.rego "$tmp/opa/data.json" 2>"$tmp/opa.log" &
	opa_pid=$!
	pids+=("$opa_pid")
	opa_up=0
	for ((i = 0; i < 600; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$opa_port") 2>/dev/null; then
			opa_up=1
			break
		fi
		kill -0 "$opa_pid" 2>/dev/null || {
			cat "$tmp/opa.log" >&2
			die "OPA exited before it listened"
		}
		sleep 0.1
	done
	[[ $opa_up == 1 ]] || die "OPA did not listen on 127.0.0.1:$opa_port within a minute"
	opa_verified_url=http://127.0.0.1:$opa_port/v1/data/sallyport/verified
	opa_unverified_url=http://127.0.0.1:$opa_port/v1/data/sallyport/unverified
	echo "opa: pid $opa_pid on 127.0.0.1:$opa_port ($(wc -c <"$tmp/opa/data.json") bytes of data)"
fi

# Both answer the same body; sallyport must allow it.
"$tmp/load" -check -url "$floor_url" -body-file "$tmp/body.json" >"$tmp/check-floor.txt" ||
	die "the floor did not answer 200: $(cat "$tmp/check-floor.txt")"
"$tmp/load" -check -url "$decide_url" -body-file "$tmp/body.json" -expect '"allowed":true' >"$tmp/check-decide.txt" ||
	die "sallyport did not allow the benchmark request: $(cat "$tmp/check-decide.txt")"
echo "answers: floor $(($(wc -c <"$tmp/check-floor.txt") - 5)) bytes, sallyport $(($(wc -c <"$tmp/check-decide.txt") - 5)) bytes; sallyport allows the request"
if [[ $GRPC == 1 ]]; then
	"$tmp/grpcload" -check -addr "$grpc_addr" -body-file "$tmp/body.json" >"$tmp/check-grpc.txt" ||
		die "sallyport's ext_authz did not allow the benchmark request: $(cat "$tmp/check-grpc.txt")"
	echo "ext_authz allows the request"
fi
if [[ $OPA == 1 ]]; then
	for url in "$opa_verified_url" "$opa_unverified_url"; do
		"$tmp/load" -check -url "$url" -body-file "$tmp/opa/input.json" -expect '{"result":{"allowed":true' >"$tmp/check-opa.txt" ||
			die "OPA did not allow the benchmark request at $url: $(cat "$tmp/check-opa.txt")"
	done
	echo "OPA allows the request at both entry points (answer of $(($(wc -c <"$tmp/check-opa.txt") - 5)) bytes)"
	say "equivalence: sallyport and OPA (with the credential check) decide alike"
	"$tmp/equiv" -sallyport "$decide_url" -opa "$opa_verified_url" -body-file "$tmp/body.json" | tee "$tmp/equiv.txt" ||
		die "sallyport and OPA decide differently; the comparison would be meaningless"
	keep "$tmp/equiv.txt"
fi

# lua BODY FILE: writes a wrk script POSTing BODY.
lua() {
	cat >"$2" <<EOF
-- POST the benchmark body; done() prints one line for run.sh.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[$1]==]

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d rps=%.1f p50_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF
}
lua "$body" "$tmp/post.lua"
if [[ $OPA == 1 ]]; then
	lua "$(<"$tmp/opa/input.json")" "$tmp/opa.lua"
fi

# cpu PID: user+system CPU time of a process so far, in microseconds.
clk_tck=$(getconf CLK_TCK)
cpu() {
	local stat f
	stat=$(<"/proc/$1/stat")
	read -r -a f <<<"${stat##*) }" # fields from the 3rd (state) on
	echo $(((f[11] + f[12]) * 1000000 / clk_tck))
}

# sample: sets busy, the busy time of all CPUs (steal included), and
# children, the CPU time of this shell's finished children (wrk, load), both
# in microseconds.
sample() {
	local u n s irq sirq st
	read -r _ u n s _ _ irq sirq st _ </proc/stat
	busy=$(((u + n + s + irq + sirq + st) * 1000000 / clk_tck))
	times >"$tmp/times" # in this shell: a subshell's children are not its own
	children=$(awk 'NR == 2 {
		t = 0
		for (i = 1; i <= NF; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
		printf "%d", t * 1e6
	}' "$tmp/times")
}

# account_start PID, then account_end PID around a load generator run in the
# foreground: account_end sets usage to "server_us=… cpus=… others=…": the
# server's CPU time, the CPUs it used, and the CPUs used by everything that
# is neither the server nor the load generator (other people's work on a
# shared machine, kernel threads, the hypervisor's steal).
acct_server=0 acct_busy=0 acct_children=0 acct_t0=0 usage=
account_start() {
	acct_server=$(cpu "$1")
	sample
	acct_busy=$busy acct_children=$children acct_t0=$EPOCHREALTIME
}
account_end() {
	local server t1
	server=$(($(cpu "$1") - acct_server))
	t1=$EPOCHREALTIME
	sample
	usage=$(awk -v server="$server" -v busy=$((busy - acct_busy)) -v gen=$((children - acct_children)) \
		-v t0="$acct_t0" -v t1="$t1" 'BEGIN {
			s = t1 - t0; o = (busy - server - gen) / 1e6 / s
			printf "server_us=%d cpus=%.2f others=%.2f", server, server / 1e6 / s, (o < 0 ? 0 : o)
		}')
}

# bench NAME URL PID [SCRIPT]: warms up, measures, and sets result to wrk's
# RESULT line plus usage and the server's CPU time per answer (cpu_us).
# SCRIPT is the wrk script, default post.lua (the /v1/decide body).
result=
bench() {
	local name=$1 url=$2 pid=$3 script=${4:-$tmp/post.lua}
	wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$script" "$url" >/dev/null
	account_start "$pid"
	wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$script" "$url" >"$tmp/wrk-$name.txt"
	account_end "$pid"
	keep "$tmp/wrk-$name.txt"
	checked "$name" "$tmp/wrk-$name.txt"
}

# checked NAME FILE: sets result to FILE's RESULT line plus usage and cpu_us;
# fails on errors or non-2xx (for gRPC: not OK) answers.
checked() {
	result=$(grep '^RESULT' "$2") || die "no result from the load generator against $1"
	if [[ $(field "$result" errors) != 0 || $(field "$result" non2xx) != 0 ]]; then
		cat "$2" >&2
		die "the load generator saw errors or non-2xx answers from $1"
	fi
	result+=" $usage cpu_us=$(awk -v c="$(field "$usage" server_us)" -v n="$(field "$result" requests)" 'BEGIN { printf "%.1f", c/n }')"
}

# grpcbench NAME PID: grpcload against ext_authz, with wrk's settings: a
# warm-up run, then the measured one.
grpcbench() {
	local name=$1 pid=$2
	"$tmp/grpcload" -addr "$grpc_addr" -body-file "$tmp/body.json" -connections "$CONNECTIONS" \
		-warmup "$WARMUP" -duration 0s >/dev/null || die "grpcload warm-up failed"
	account_start "$pid"
	"$tmp/grpcload" -addr "$grpc_addr" -body-file "$tmp/body.json" -connections "$CONNECTIONS" \
		-warmup 0s -duration "$DURATION" >"$tmp/grpc-$name.txt" || die "grpcload failed: $(cat "$tmp/grpc-$name.txt")"
	account_end "$pid"
	keep "$tmp/grpc-$name.txt"
	checked "$name" "$tmp/grpc-$name.txt"
}

# --- phase 1: saturation -------------------------------------------------------
say "phase 1: saturation, wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a ${WARMUP} warm-up each)"
bench floor "$floor_url" "$floor_pid"
floor_result=$result
echo "floor done"
bench sallyport "$decide_url" "$decide_pid"
decide_result=$result
echo "sallyport /v1/decide done"
grpc_result=
if [[ $GRPC == 1 ]]; then
	grpcbench sallyport-grpc "$decide_pid"
	grpc_result=$result
	echo "sallyport ext_authz done (grpcload, $CONNECTIONS connections)"
fi
opa_v_result='' opa_u_result=''
if [[ $OPA == 1 ]]; then
	bench opa-verified "$opa_verified_url" "$opa_pid" "$tmp/opa.lua"
	opa_v_result=$result
	echo "OPA with io.jwt.decode_verify done"
	bench opa-unverified "$opa_unverified_url" "$opa_pid" "$tmp/opa.lua"
	opa_u_result=$result
	echo "OPA without a credential check done"
fi

# row LABEL RESULT: one line of the table, with the ratio to the floor.
row() {
	local r=$2
	awk -v label="$1" -v rps="$(field "$r" rps)" -v p50="$(field "$r" p50_us)" \
		-v p99="$(field "$r" p99_us)" -v p999="$(field "$r" p999_us)" \
		-v cpu="$(field "$r" cpu_us)" -v others="$(field "$r" others)" -v floor="$floor_rps" \
		'BEGIN { printf "%-30s %9.0f %8.3f %8.3f %9.3f %11.1f %7.2f %7.2f\n", label, rps, p50/1000, p99/1000, p999/1000, cpu, others, rps/floor }'
}
# ratio LABEL A B [TARGET]: the ratio of two req/s.
ratio() {
	awk -v label="$1" -v a="$2" -v b="$3" -v t="${4:-}" \
		'BEGIN { printf "%-44s %6.2f%s\n", label, a/b, (t == "" ? "" : "   (target >= " t ")") }'
}
floor_rps=$(field "$floor_result" rps)
decide_rps=$(field "$decide_result" rps)
{
	echo
	echo "saturation: wrk -t$THREADS -c$CONNECTIONS -d$DURATION after a $WARMUP warm-up (ext_authz: grpcload, $CONNECTIONS connections);"
	echo "$POLICIES policy pairs, decision log $DECISION_LOG; load avg now $(cut -d' ' -f1-3 /proc/loadavg)"
	printf '%-30s %9s %8s %8s %9s %11s %7s %7s\n' "" "req/s" "p50 ms" "p99 ms" "p99.9 ms" "server CPU" "others" "/floor"
	printf '%-30s %9s %8s %8s %9s %11s %7s %7s\n' "" "" "" "" "" "us/answer" "CPUs" ""
	row "floor" "$floor_result"
	row "sallyport /v1/decide" "$decide_result"
	if [[ -n $grpc_result ]]; then
		row "sallyport ext_authz (gRPC)" "$grpc_result"
	fi
	if [[ -n $opa_v_result ]]; then
		row "OPA, io.jwt.decode_verify" "$opa_v_result"
		row "OPA, no credential check" "$opa_u_result"
	fi
	echo
	ratio "sallyport /v1/decide / floor" "$decide_rps" "$floor_rps" 0.70
	if [[ -n $opa_v_result ]]; then
		ratio "sallyport /v1/decide / OPA with JWT check" "$decide_rps" "$(field "$opa_v_result" rps)" 2
		ratio "sallyport /v1/decide / OPA without" "$decide_rps" "$(field "$opa_u_result" rps)" 1
		if [[ -n $grpc_result ]]; then
			ratio "sallyport ext_authz / OPA with JWT check" "$(field "$grpc_result" rps)" "$(field "$opa_v_result" rps)"
			ratio "sallyport ext_authz / OPA without" "$(field "$grpc_result" rps)" "$(field "$opa_u_result" rps)"
		fi
	fi
	echo "(others: CPUs used meanwhile by processes other than the server and the load generator)"
} | tee "$tmp/saturation.txt"
keep "$tmp/saturation.txt"

# --- phase 2: latency at half saturation ---------------------------------------
rate=$LOAD_RATE
if [[ -z $rate ]]; then
	rate=$(awk -v r="$decide_rps" 'BEGIN { printf "%d", r/2 }')
fi

# steady NAME URL PID [EXPECT]: load at $rate; sets result to load's RESULT
# line plus usage.
steady() {
	local name=$1 url=$2 pid=$3
	local expect=()
	if [[ $# -gt 3 ]]; then
		expect=(-expect "$4")
	fi
	account_start "$pid"
	"$tmp/load" -url "$url" -body-file "$tmp/body.json" "${expect[@]}" -rate "$rate" \
		-duration "$LOAD_DURATION" -warmup "$LOAD_WARMUP" -connections "$CONNECTIONS" \
		-slow-file "$tmp/slow-$name.txt" >"$tmp/load-$name.txt" ||
		die "load against $name failed: $(cat "$tmp/load-$name.txt")"
	account_end "$pid"
	keep "$tmp/load-$name.txt"
	keep "$tmp/slow-$name.txt"
	grep -v '^RESULT' "$tmp/load-$name.txt"
	result="$(grep '^RESULT' "$tmp/load-$name.txt") $usage"
}

say "phase 2: $rate req/s (half of sallyport's $decide_rps) for $LOAD_DURATION after a $LOAD_WARMUP warm-up, $CONNECTIONS connections, open-loop; sallyport, then at the same rate the floor, and the floor's handler in a process like sallyport's, as controls"
steady sallyport-half "$decide_url" "$decide_pid" '"allowed":true'
decide_half=$result
steady floor-half "$floor_url" "$floor_pid"
floor_half=$result
# The floor's handler in a process holding what sallyport's holds (its
# imports and a compiled store of the same size): the same live heap for the
# collector to mark on every cycle, without deciding anything.
start floorproc "$tmp/decide" -handler floor -policies "$POLICIES" -decision-log discard \
	-body-file "$tmp/floorproc-body.json"
floorproc_pid=${pids[-1]}
steady floorproc-half "http://$addr/v1/decide" "$floorproc_pid"
floorproc_half=$result
stop "$floorproc_pid"
live_heap() { # live_heap LOG: the live heap a bench server printed, in MB
	awk '/live heap [0-9]+ bytes/ { for (i = 1; i < NF; i++) if ($i == "heap") printf "%.2f", $(i + 1) / 1048576 }' "$1"
}

halfrow() { # halfrow LABEL RESULT
	local r=$2
	awk -v label="$1" -v p50="$(field "$r" p50_us)" -v p99="$(field "$r" p99_us)" \
		-v p999="$(field "$r" p999_us)" -v s99="$(field "$r" svc_p99_us)" -v cpus="$(field "$r" cpus)" \
		-v others="$(field "$r" others)" \
		'BEGIN { printf "%-24s %9.3f %9.3f %9.3f %14.3f %6.2f %7.2f\n", label, p50/1000, p99/1000, p999/1000, s99/1000, cpus, others }'
}
{
	echo
	echo "at $rate req/s; latency from each request's due time (service time: from its write);"
	echo "CPUs used by the server, and by other processes (neither server nor load generator)"
	printf '%-24s %9s %9s %9s %14s %6s %7s\n' "" "p50 ms" "p99 ms" "p99.9 ms" "service p99 ms" "CPUs" "others"
	halfrow "sallyport /v1/decide" "$decide_half"
	halfrow "floor (control)" "$floor_half"
	halfrow "floor, sallyport's heap" "$floorproc_half"
	echo "live heap after start: sallyport $(live_heap "$tmp/decide.log") MB, floor $(live_heap "$tmp/floor.log") MB, floor's handler in sallyport's process $(live_heap "$tmp/floorproc.log") MB"
	awk -v p99="$(field "$decide_half" p99_us)" 'BEGIN { printf "sallyport p99 %.3f ms (target < 2 ms)\n", p99/1000 }'
} | tee "$tmp/half.txt"
keep "$tmp/half.txt"

# --- servers' own account ----------------------------------------------------------
stop "$decide_pid"
say "sallyport's counters (every decision allowed, review cache warm)"
grep -v '^decide: serving' "$tmp/decide.log" | sed 's/^decide: /  /'
# The only denials are the equivalence check's variants.
denials=$(awk -F'} ' '/^decide: sallyport_decisions_total\{allowed=false/ { n += $2 } END { print n + 0 }' "$tmp/decide.log")
expected=0
if [[ -f $tmp/equiv.txt ]]; then
	expected=$(grep -c 'allowed=false' "$tmp/equiv.txt" || true)
fi
if [[ $denials != "$expected" ]]; then
	die "sallyport denied $denials requests; only the equivalence check's $expected variants should be denied"
fi
if [[ -f $tmp/decisions.log ]]; then
	echo "  decision log: $(du -h "$tmp/decisions.log" | cut -f1), $(wc -l <"$tmp/decisions.log") lines"
fi
keep "$tmp/decide.log"
rm -f "$tmp/decisions.log"
stop "$floor_pid"
if [[ -n $opa_pid ]]; then
	stop "$opa_pid"
fi

# --- phase 3: CPU profiles ---------------------------------------------------------
if [[ $PROFILE == 1 ]]; then
	say "phase 3: CPU profiles of both servers, each under wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
	if [[ $DECISION_LOG == file ]]; then
		decide_log=$tmp/decisions-profile.log
	fi
	for name in floor decide; do
		if [[ $name == floor ]]; then
			start floor-profile "$tmp/floor" -cpuprofile "$tmp/cpu-floor.pprof"
		else
			start decide-profile "$tmp/decide" -policies "$POLICIES" -decision-log "$decide_log" \
				-body-file "$tmp/body-profile.json" -cpuprofile "$tmp/cpu-decide.pprof"
		fi
		wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$tmp/post.lua" "http://$addr/v1/decide" >"$tmp/wrk-profile-$name.txt"
		echo "$name under profiling: $(field "$(grep '^RESULT' "$tmp/wrk-profile-$name.txt")" rps) req/s"
		stop "${pids[-1]}"
	done
	rm -f "$tmp/decisions-profile.log"
	for name in decide floor; do
		go tool pprof -top -nodecount=30 "$tmp/$name" "$tmp/cpu-$name.pprof" 2>/dev/null >"$tmp/pprof-$name-top.txt"
		go tool pprof -top -cum -nodecount=45 "$tmp/$name" "$tmp/cpu-$name.pprof" 2>/dev/null >"$tmp/pprof-$name-cum.txt"
		keep "$tmp/cpu-$name.pprof" "$tmp/pprof-$name-top.txt" "$tmp/pprof-$name-cum.txt"
	done
	echo; echo "sallyport, flat:"
	tail -n +5 "$tmp/pprof-decide-top.txt"
	echo; echo "sallyport, cumulative:"
	tail -n +7 "$tmp/pprof-decide-cum.txt"
	echo; echo "floor, cumulative:"
	tail -n +7 "$tmp/pprof-floor-cum.txt" | head -n 25
fi

# --- phase 4: engine benchmarks ------------------------------------------------------
if [[ $ENGINE_BENCH == 1 ]]; then
	say "phase 4: engine, go test -run '^\$' -bench 'Decide' -benchmem -count $BENCH_COUNT ./internal/decision/"
	go test -run '^$' -bench 'Decide' -benchmem -count "$BENCH_COUNT" ./internal/decision/ | tee "$tmp/engine.txt"
	keep "$tmp/engine.txt"
	# Mean ns/op of the 10- and 10,000-policy stores.
	awk '
		$1 ~ /^BenchmarkDecide\/policies=10-/    { s10 += $3; n10++ }
		$1 ~ /^BenchmarkDecide\/policies=10000-/ { s10k += $3; n10k++ }
		END {
			if (n10 && n10k)
				printf "\nengine: %.0f ns/op with 10 policies, %.0f with 10,000: %.2fx (target <= 1.2x, and <= 5000 ns/op)\n",
					s10/n10, s10k/n10k, (s10k/n10k)/(s10/n10)
		}' "$tmp/engine.txt"
fi

# --- phase 5: scale ----------------------------------------------------------------
if [[ $SCALE == 1 ]]; then
	say "phase 5: scale, 10 to 10,000 policies: go test -run '^\$' -bench 'DecideScale|Build' -benchmem -count $BENCH_COUNT ./internal/decision/ ./internal/store/"
	go test -run '^$' -bench 'DecideScale|Build' -benchmem -count "$BENCH_COUNT" -timeout 30m \
		./internal/decision/ ./internal/store/ | tee "$tmp/scale.txt"
	keep "$tmp/scale.txt"
	# One line per size: the means over BENCH_COUNT runs.
	awk '
		function size(name) { sub(/^.*policies=/, "", name); sub(/-[0-9]+$/, "", name); return name + 0 }
		function unit(u,   i) { for (i = 3; i < NF; i++) if ($(i + 1) == u) return $i; return "" }
		$1 ~ /^BenchmarkDecideScale\//         { n = size($1); dec[n] += $3; ndec[n]++ }
		$1 ~ /^BenchmarkBuild\/policies/        { n = size($1); bld[n] += $3; nbld[n]++ }
		$1 ~ /^BenchmarkBuildFromScratch\//    { n = size($1); pair[n] += unit("ns/pair"); npair[n]++ }
		$1 ~ /^BenchmarkBuildMemory\/conditions=distinct\//  { n = size($1); mem[n] += unit("heap-B/policy"); conn[n] += unit("heap-B/connection"); nmem[n]++ }
		$1 ~ /^BenchmarkBuildMemory\/conditions=templated\// { n = size($1); tmem[n] += unit("heap-B/policy"); tconn[n] += unit("heap-B/connection"); ntmem[n]++ }
		END {
			printf "\n%-10s %14s %10s %16s %18s %18s %18s %20s\n", "policies", "decision ns", "x of 10", "snapshot build", "compile per pair", "heap per policy", "per connection", "templated: both"
			split("10 100 1000 10000", sizes, " ")
			for (i = 1; i <= 4; i++) {
				n = sizes[i]
				d = ndec[n] ? dec[n] / ndec[n] : 0
				printf "%-10d %14.0f %10.2f %13.2f ms %15.3f ms %15.1f KB %15.1f KB %9.1f / %5.1f KB\n", n, d,
					(ndec[10] && d ? d / (dec[10] / ndec[10]) : 0),
					(nbld[n] ? bld[n] / nbld[n] / 1e6 : 0), (npair[n] ? pair[n] / npair[n] / 1e6 : 0),
					(nmem[n] ? mem[n] / nmem[n] / 1024 : 0), (nmem[n] ? conn[n] / nmem[n] / 1024 : 0),
					(ntmem[n] ? tmem[n] / ntmem[n] / 1024 : 0), (ntmem[n] ? tconn[n] / ntmem[n] / 1024 : 0)
			}
			print "(decision: BenchmarkDecideScale, every pair with its CEL conditions; target 10,000 <= 1.2x of 10."
			print " snapshot build: BenchmarkBuild, one policy recompiled and all indexed; compile: BenchmarkBuildFromScratch;"
			print " heap: BenchmarkBuildMemory, live heap per ResourcePolicy of ten rules and per ConnectionPolicy, every"
			print " condition distinct; templated: every policy with the same conditions, which compile once)"
		}' "$tmp/scale.txt" | tee "$tmp/scale-summary.txt"
	keep "$tmp/scale-summary.txt"
fi

say "summary"
cat "$tmp/saturation.txt" "$tmp/half.txt"

say "done; load avg now $(cut -d' ' -f1-3 /proc/loadavg)"
