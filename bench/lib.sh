# bench/lib.sh — helpers the bench scripts share (POSIX sh, sourced).

# wait_port DIR: waits up to 10 s for the sluiced started with
# --port-file DIR/port (its output in DIR/log) to write its port; prints
# that log and exits 1 if it does not.
wait_port() {
	_i=0
	while [ ! -s "$1/port" ]; do
		_i=$((_i + 1))
		[ $_i -lt 100 ] || { echo "sluiced did not start:" >&2; cat "$1/log" >&2; exit 1; }
		sleep 0.1
	done
}
