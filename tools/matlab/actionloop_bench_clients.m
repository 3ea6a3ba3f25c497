function actionloop_bench_clients()
%ACTIONLOOP_BENCH_CLIENTS  Time what the MATLAB/Octave clients cost per frame and per message.
%   octave-cli --no-history --eval "addpath('tools/matlab'); actionloop_bench_clients"
%   (or actionloop_bench_clients in MATLAB). Publishing goes to a bound socket without a
%   subscriber (ZeroMQ drops the message), so only this side's work is timed: pixel conversion,
%   header, the copy into the ZeroMQ message. Decoding is the msgpack header of an action and of
%   a status message as the daemon sends them (7 classes).

    pub = actionloop_publisher('tcp://127.0.0.1:*');
    sizes = {[512 512], [256 256]};
    for s = 1:numel(sizes)
        frame = uint16(rand(sizes{s}) * 4000);
        layouts = {'matlab', 'rowmajor'};
        for l = 1:numel(layouts)
            times = zeros(1, 500);
            for k = 1:numel(times)
                started = tic;
                pub = actionloop_publish(pub, frame, 'layout', layouts{l});
                times(k) = toc(started);
            end
            report(sprintf('publish %d x %d uint16, %s layout', sizes{s}(1), sizes{s}(2), layouts{l}), times(51:end));
        end
    end
    actionloop_close(pub);

    t = uint64(1e12);
    action = struct('v', uint64(1), 'seq', uint64(1234), 't_acq_ns', t, 't_recv_ns', t + 5, 't_done_ns', t + 9, ...
        't_pub_ns', t + 10, 'state', 'decoding', 'action', 'reach', 'index', uint64(2), 'probs', ones(1, 7) / 7, ...
        'confidence', 1 / 7, 'model_id', repmat('ab', 1, 32), 'dropped', uint64(0), 'skipped', uint64(0), 'session', '');
    counters = struct('frames_received', uint64(100), 'decoded', uint64(100), 'skipped', uint64(0), ...
        'dropped', uint64(0), 'malformed', uint64(0));
    latency = struct('p50_us', 300.0, 'p90_us', 310.0, 'p99_us', 400.0, 'p999_us', 500.0, 'max_us', 600.0, ...
        'infer_p50_us', 200.0, 'infer_p99_us', 250.0);
    status = struct('v', uint64(1), 't_ns', t, 'state', 'running', 'uptime_s', 12.5, 'model_id', repmat('ab', 1, 32), ...
        'backend', 'onnxruntime', 'window', uint64(8), 'window_fill', uint64(8), 'counters', counters, ...
        'latency_us', latency, 'session', '');
    messages = {'action', action; 'status', status};
    for m = 1:size(messages, 1)
        parts = {uint8(messages{m, 1}), actionloop_msgpack_encode(messages{m, 2})};
        times = zeros(1, 300);
        for k = 1:numel(times)
            started = tic;
            actionloop_decode_message(parts, 'msgpack');
            times(k) = toc(started);
        end
        report(sprintf('decode %s (%d bytes)', messages{m, 1}, numel(parts{2})), times(31:end));
    end
end

function report(name, times)
    times = sort(times) * 1e6;
    fprintf('%-42s p50 %6.0f us   p99 %6.0f us\n', name, times(round(end / 2)), times(round(end * 0.99)));
end
