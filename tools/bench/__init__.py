"""The benchmark harness, one job per module.

- pacing: rates and the absolute-deadline pacer;
- frames: recorded trials as replay data, preloaded into RAM before a measurement;
- collector: the receiver thread that only receives and stamps;
- replay: the replay loop and the `actionloop replay` command;
- report: latency statistics, accuracy and tables from the raw stamps (pure functions);
- echo: the floors, a bare pyzmq echo and the protocol echo, each run as its own process;
- processes: starting, watching and stopping the daemon and echo processes;
- inputs: the simulated held-out animal and the default model, cached;
- inference: the backend alone (`actionloop bench`, and the inference floor);
- ramp: the throughput ramp;
- results: bench/latency.json, its targets and its markdown table;
- latency: `actionloop replay-bench`, which runs all of the above in order.
"""
