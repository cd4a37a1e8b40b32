#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the workflow's SLURM tests.
#
#   bash tests/slurm/cluster.sh up       install (Debian packages), configure, start, prove it works
#   bash tests/slurm/cluster.sh status   which daemons run, and what sinfo says
#   bash tests/slurm/cluster.sh down     stop every daemon by the PID in its pid file; remove the configs
#
# Needs root and apt-get (Debian 12 or alike); needs no systemd: every daemon is started by
# hand. munged authenticates, MariaDB + slurmdbd keep the accounting that `sacct` reads
# (snakemake-executor-plugin-slurm polls job states with sacct and, without accounting,
# waits forever), slurmctld schedules and slurmd runs the jobs on this one node.
#
# All state, logs and pid files live under PARAPROBE_SLURM_DIR (default /tmp/paraprobe-slurm);
# the SLURM client tools find the cluster through /etc/slurm/slurm.conf, which this script
# writes and marks as its own (it refuses to replace a slurm.conf it did not write).
# `up` is idempotent: daemons already running are left alone, except that SLURM's are
# restarted when their generated config changed (say, a new hostname).
set -euo pipefail

STATE_DIR=${PARAPROBE_SLURM_DIR:-/tmp/paraprobe-slurm}
# MariaDB listens on loopback only, on a port unlikely to clash with a system database.
DB_PORT=${PARAPROBE_SLURM_DB_PORT:-33061}
CLUSTER_NAME=paraprobe
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
SLURM_CONF=/etc/slurm/slurm.conf
SLURMDBD_CONF=/etc/slurm/slurmdbd.conf
MARKER="# Written by paraprobe tests/slurm/cluster.sh; state in"
# Stopped in this order, started in the reverse one.
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)

PID_DIR=$STATE_DIR/pid
LOG_DIR=$STATE_DIR/log
DB_DIR=$STATE_DIR/mariadb

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pid_file() { printf '%s/%s.pid\n' "$PID_DIR" "$1"; }

# The PID of a daemon that is running, from its pid file; nothing (status 1) when it is not.
# The process must still be the daemon's own binary: a stale file whose PID was reused by
# another program must not make us skip a start or signal a stranger. A zombie counts as
# stopped (it has no executable left to compare). Debian installs slurmctld and slurmd
# through alternatives (slurmctld -> slurmctld-wlm), hence the resolved path.
running_pid() {
	local daemon=$1 file pid exe
	file=$(pid_file "$daemon")
	[[ -s $file ]] || return 1
	# The daemon may remove its pid file while we read it.
	pid=$(tr -dc '0-9' 2>/dev/null <"$file") && [[ -n $pid ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ ${exe% (deleted)} == "$(readlink -f "$(command -v "$daemon")")" ]] || return 1
	printf '%s\n' "$pid"
}

# Polls a command until it succeeds; dies with the message after `seconds`.
wait_for() {
	local seconds=$1 message=$2
	shift 2
	local deadline=$((SECONDS + seconds))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$message (waited ${seconds}s)"
		sleep 0.5
	done
}

# Also for `status` and `down`: only root may look into (and signal) the daemons' processes.
require_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (uid is $(id -u)): it installs Debian packages and runs the SLURM daemons"
}

require_apt() {
	command -v apt-get >/dev/null || die "needs apt-get (Debian or Ubuntu) to install ${PACKAGES[*]}"
}

packages_installed() {
	local package
	for package in "${PACKAGES[@]}"; do
		[[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) == "install ok installed" ]] || return 1
	done
}

install_packages() {
	packages_installed && return 0
	log "installing ${PACKAGES[*]}"
	# Packages must not start their services (there is no init system to own them, and
	# we start every daemon ourselves): invoke-rc.d asks policy-rc.d, and 101 means "no".
	local policy=/usr/sbin/policy-rc.d own_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=1
	fi
	local status=0
	{
		apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
	} >"$STATE_DIR/apt.log" 2>&1 || status=$?
	((own_policy)) && rm -f "$policy"
	((status == 0)) || die "apt-get failed (exit $status); its output: $STATE_DIR/apt.log"
}

start_munged() {
	running_pid munged >/dev/null && return 0
	# The package creates the key; a cleaned machine may have lost it.
	[[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
	install -d -o munge -g munge -m 755 /run/munge
	runuser -u munge -- /usr/sbin/munged --pid-file="$(pid_file munged)" --force
	wait_for 10 "munged does not answer; log: /var/log/munge/munged.log" sh -c 'munge -n | unmunge'
}

start_mariadbd() {
	running_pid mariadbd >/dev/null && return 0
	install -d -o mysql -g mysql -m 700 "$DB_DIR"
	cat >"$STATE_DIR/my.cnf" <<-EOF
		[mariadbd]
		user = mysql
		datadir = $DB_DIR/data
		socket = $DB_DIR/mariadbd.sock
		pid-file = $(pid_file mariadbd)
		log-error = $LOG_DIR/mariadbd.log
		bind-address = 127.0.0.1
		port = $DB_PORT
		# slurmdbd's documented minimum; the default is too small for its schema upgrades.
		innodb_lock_wait_timeout = 900
	EOF
	if [[ ! -d $DB_DIR/data/mysql ]]; then
		mariadb-install-db --defaults-file="$STATE_DIR/my.cnf" --auth-root-authentication-method=socket \
			>"$LOG_DIR/mariadb-install-db.log" 2>&1 ||
			die "mariadb-install-db failed; log: $LOG_DIR/mariadb-install-db.log"
	fi
	# mariadbd does not fork: detach it from this shell so it outlives the script.
	setsid mariadbd --defaults-file="$STATE_DIR/my.cnf" </dev/null >>"$LOG_DIR/mariadbd.log" 2>&1 &
	wait_for 60 "MariaDB does not answer; log: $LOG_DIR/mariadbd.log" \
		mariadb-admin --socket="$DB_DIR/mariadbd.sock" ping
	# slurmdbd connects over TCP to 127.0.0.1; the password only guards a loopback test database.
	local password
	password=$(db_password)
	mariadb --socket="$DB_DIR/mariadbd.sock" <<-EOF
		CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
		CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$password';
		GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
		GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
	EOF
}

db_password() {
	local file=$STATE_DIR/db_password
	[[ -s $file ]] || (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$file")
	cat "$file"
}

# Set when write_configs changed a file, so that running SLURM daemons are restarted.
CONFIG_CHANGED=0

# Refuses to overwrite a SLURM config that someone else wrote.
write_slurm_file() {
	local path=$1 mode=$2 content=$3
	if [[ -e $path ]] && ! grep -qF "$MARKER" "$path"; then
		die "$path exists and was not written by this script; move it away to use the test cluster"
	fi
	[[ -e $path && $(<"$path") == "$content" ]] && return 0
	CONFIG_CHANGED=1
	install -d /etc/slurm
	(umask 077 && printf '%s\n' "$content" >"$path.tmp")
	chmod "$mode" "$path.tmp"
	mv "$path.tmp" "$path"
}

write_configs() {
	local host node_line memory_mb
	host=$(hostname -s)
	# `slurmd -C` prints this node's NodeName= line (CPUs, sockets, cores, threads, memory).
	node_line=$(slurmd -C | grep '^NodeName=') || die "slurmd -C printed no NodeName line"
	memory_mb=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
	# Leave the system some headroom: a node that reports less memory than slurm.conf
	# promises is drained.
	node_line=$(sed -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/" \
		-e "s/RealMemory=[0-9]*/RealMemory=$((memory_mb * 9 / 10))/" <<<"$node_line")
	write_slurm_file "$SLURM_CONF" 644 "$MARKER $STATE_DIR
ClusterName=$CLUSTER_NAME
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
# No cgroups without systemd: track and place processes the plain way.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay in slurmctld's memory (and squeue) for 5 minutes.
MinJobAge=300
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# One GPU with no device behind it, so that jobs requesting gpu: 1 (sbatch --gpus=1) are
# scheduled here too; they find no CUDA and run on the CPU.
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# sacct shows the comment only when it is stored; the executor plugin puts the rule name there.
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
$node_line Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
	write_slurm_file /etc/slurm/gres.conf 644 "$MARKER $STATE_DIR
NodeName=$host Name=gpu File=/dev/null"
	# slurmdbd refuses a config that others can read (it holds the database password).
	write_slurm_file "$SLURMDBD_CONF" 600 "$MARKER $STATE_DIR
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$(pid_file slurmdbd)
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(db_password)
StorageLoc=slurm_acct_db"
}

start_slurm_daemon() {
	local daemon=$1
	running_pid "$daemon" >/dev/null && return 0
	# Each forks into the background and writes its pid file.
	"$daemon" || die "$daemon did not start; log: $LOG_DIR/$daemon.log"
	wait_for 30 "$daemon wrote no pid file; log: $LOG_DIR/$daemon.log" running_pid "$daemon"
}

node_state() { sinfo -h -o %t 2>/dev/null | head -n1; }

wait_until_idle() {
	local deadline=$((SECONDS + 60)) state
	while state=$(node_state) && [[ $state != idle ]]; do
		if [[ $state == down* || $state == drain* ]]; then
			# A node remembered as down from an earlier run comes back here.
			scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
		fi
		((SECONDS < deadline)) ||
			die "the node is '$state', not idle (reason: $(sinfo -h -o %E | head -n1)); logs: $LOG_DIR/slurmctld.log, $LOG_DIR/slurmd.log"
		sleep 0.5
	done
}

# One job through the whole chain, then its record through sacct.
prove_cluster_works() {
	local job_name="paraprobe-smoke-$$"
	timeout -k 5 60 srun -N1 -n1 --job-name="$job_name" true ||
		die "srun -N1 -n1 true failed; logs: $LOG_DIR/slurmctld.log, $LOG_DIR/slurmd.log"
	# slurmctld hands finished jobs to slurmdbd asynchronously.
	wait_for 30 "sacct does not list the smoke job as COMPLETED; log: $LOG_DIR/slurmdbd.log" \
		sh -c "sacct -n -X -P --name='$job_name' -o State | grep -qx COMPLETED"
}

cmd_up() {
	require_apt
	install -d -m 755 "$STATE_DIR" "$PID_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
	# munged (user munge) and mariadbd (user mysql) write their pid files here themselves.
	chmod 1777 "$PID_DIR"
	install_packages
	start_munged
	start_mariadbd
	write_configs
	if ((CONFIG_CHANGED)); then
		# Daemons started with an older config would keep it.
		stop_daemons slurmd slurmctld slurmdbd
	fi
	start_slurm_daemon slurmdbd
	wait_for 30 "slurmdbd does not answer sacctmgr; log: $LOG_DIR/slurmdbd.log" sacctmgr -n list cluster
	start_slurm_daemon slurmctld
	start_slurm_daemon slurmd
	wait_until_idle
	prove_cluster_works
	log "up: node $(hostname -s) idle, srun and sacct work; state in $STATE_DIR"
}

# Stops the named daemons, in the order given, by the PIDs in their pid files.
stop_daemons() {
	local daemon pid deadline
	for daemon in "$@"; do
		pid=$(running_pid "$daemon") || continue
		kill -TERM "$pid"
		deadline=$((SECONDS + 30))
		while running_pid "$daemon" >/dev/null; do
			if ((SECONDS >= deadline)); then
				log "$daemon (pid $pid) ignored SIGTERM for 30s; sending SIGKILL"
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.2
		done
		log "stopped $daemon (pid $pid)"
	done
}

# Also removes this script's configs: with a slurm.conf and no controller every SLURM client
# call waits 9 s for one, and the Snakemake SLURM plugin runs `scontrol show config` whenever
# snakemake starts, even for a local run; without a slurm.conf the call fails at once.
cmd_down() {
	stop_daemons "${DAEMONS[@]}"
	local path
	for path in "$SLURM_CONF" "$SLURMDBD_CONF"; do
		if [[ -e $path ]] && grep -qF "$MARKER" "$path"; then
			rm -f "$path"
			log "removed $path"
		fi
	done
}

# Exits 0 only when every daemon runs.
cmd_status() {
	local daemon pid any_stopped=0
	for daemon in "${DAEMONS[@]}"; do
		if pid=$(running_pid "$daemon"); then
			printf '%-10s running (pid %s)\n' "$daemon" "$pid"
		else
			printf '%-10s stopped\n' "$daemon"
			any_stopped=1
		fi
	done
	((any_stopped)) && return 1
	sinfo
}

case ${1:-} in
up | down | status)
	require_root
	"cmd_$1"
	;;
*)
	echo "usage: $0 up|down|status   (state in PARAPROBE_SLURM_DIR, default /tmp/paraprobe-slurm)" >&2
	exit 2
	;;
esac
