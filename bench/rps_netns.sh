#!/usr/bin/env bash
# Run a bench command inside a network namespace whose loopback steers receive processing
# (RPS) to core 1, the load generator's core. On plain loopback the kernel runs the
# receiver's TCP processing in the sender's softirq, so a server is charged for its
# clients' receive work (~2.7 us per write here, see bench/README.md); on a real network
# that work happens on the clients' machines. Needs root (ip netns). Example:
#   bench/rps_netns.sh .venv/bin/python -m bench.fanout --servers gateway,websockets --n 1000 --rates 10
set -euo pipefail
ns=gwbench-rps
ip netns list | grep -qw "$ns" || ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" sh -c 'echo 2 > /sys/class/net/lo/queues/rx-0/rps_cpus'
exec ip netns exec "$ns" "$@"
