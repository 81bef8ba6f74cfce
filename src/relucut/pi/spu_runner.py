"""Runs an exported op graph under SecretFlow SPU (Cheetah 2PC), two processes over loopback.

This file runs inside the SPU virtual environment (spu 0.9.5, jax 0.4.34, numpy<2), which has
neither torch nor relucut: it must stay standalone. relucut starts it as a subprocess:

    python spu_runner.py run WORKDIR [WORKDIR ...] --mode public-weights --runs 3

Each WORKDIR holds graph.json, arrays.npz and input.npy (written by relucut.pi.graph_export); its
result goes to WORKDIR/result.json. The driver compiles the JAX functions and makes the shares,
then starts one process per party (rank 0 and 1) linked by brpc on 127.0.0.1; each party runs
every program ``runs`` times in turn (the very first run includes the one-time OT setup) and
SPU's profile log gives the link statistics of every run.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FRACTION_BITS = 18  # SPU's FM64 default: fixed point with 18 fractional bits

LINK_RE = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), recv actions (\d+)")
EXEC_RE = re.compile(r"\[Profiling\] SPU execution .* execution took ([0-9.e+-]+)s")
OP_RE = re.compile(r"- (pphlo\.\w+), executed (\d+) times, duration ([0-9.e+-]+)s, send bytes (\d+) recv bytes (\d+)")


# --- the JAX function --------------------------------------------------------------------------
def build_function(graph: dict, array_names: list[str]):
    """Returns fn(x, *arrays) computing the graph with jax.numpy / jax.lax."""
    import jax
    import jax.numpy as jnp

    # torch's definitions: hardsigmoid relu6(x + 3) / 6, hardswish x * that
    ELEMENTWISE = {"silu": jax.nn.silu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh,
                   "hardsigmoid": jax.nn.hard_sigmoid, "hardswish": jax.nn.hard_swish}

    def ceil_extra(size, k, s, p, ceil_mode):
        # torch's ceil_mode adds a last partial window (that must start inside the input + left pad)
        if not ceil_mode:
            return 0
        out = -(-(size + 2 * p - k) // s) + 1
        if (out - 1) * s >= size + p:
            out -= 1
        return max(0, (out - 1) * s + k - (size + 2 * p))

    def window_counts(h, w, op, eh, ew):
        # how many cells each window averages over (public, from shapes only)
        kh, kw = op["kernel"]
        sh, sw = op["stride"]
        ph, pw = op["padding"]
        grid = np.zeros((h + 2 * ph + eh, w + 2 * pw + ew), np.float32)
        if op["count_include_pad"]:
            grid[: h + 2 * ph, : w + 2 * pw] = 1.0
        else:
            grid[ph: ph + h, pw: pw + w] = 1.0
        oh = (grid.shape[0] - kh) // sh + 1
        ow = (grid.shape[1] - kw) // sw + 1
        return np.array([[grid[i * sh: i * sh + kh, j * sw: j * sw + kw].sum() for j in range(ow)]
                         for i in range(oh)], np.float32)

    def avg_pool(x, op):
        kh, kw = op["kernel"]
        sh, sw = op["stride"]
        ph, pw = op["padding"]
        h, w = x.shape[-2:]
        eh, ew = ceil_extra(h, kh, sh, ph, op["ceil_mode"]), ceil_extra(w, kw, sw, pw, op["ceil_mode"])
        pads = ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew))
        total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 1, kh, kw), (1, 1, sh, sw), pads)
        counts = window_counts(h, w, op, eh, ew)
        if np.all(counts == kh * kw):
            return total * np.float32(1.0 / (kh * kw))
        return total * (1.0 / counts)

    def poly2(x, c0, c1, c2):
        # c0 + x (c1 + c2 x): one public scaling and one secret product per element
        return c0 + x * (c1 + c2 * x)

    def max_pool(x, op):
        kh, kw = op["kernel"]
        sh, sw = op["stride"]
        ph, pw = op["padding"]
        h, w = x.shape[-2:]
        eh, ew = ceil_extra(h, kh, sh, ph, op["ceil_mode"]), ceil_extra(w, kw, sw, pw, op["ceil_mode"])
        pads = ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew))
        return jax.lax.reduce_window(x, -float(2**20), jax.lax.max, (1, 1, kh, kw), (1, 1, sh, sw), pads)

    def fn(x, *arrays):
        arr = dict(zip(array_names, arrays))
        vals = {}
        for op in graph["ops"]:
            kind = op["op"]
            ins = [vals[i] for i in op["inputs"]]
            if kind == "input":
                y = x
            elif kind == "conv2d":
                y = jax.lax.conv_general_dilated(
                    ins[0], arr[op["weight"]], tuple(op["stride"]), [(p, p) for p in op["padding"]],
                    rhs_dilation=tuple(op["dilation"]), dimension_numbers=("NCHW", "OIHW", "NCHW"),
                    feature_group_count=op["groups"])
                if op["bias"]:
                    y = y + arr[op["bias"]].reshape(1, -1, 1, 1)
            elif kind == "linear":
                y = ins[0] @ arr[op["weight"]].T
                if op["bias"]:
                    y = y + arr[op["bias"]]
            elif kind == "channel_affine":
                y = ins[0] * arr[op["scale"]].reshape(1, -1, 1, 1) + arr[op["shift"]].reshape(1, -1, 1, 1)
            elif kind == "add":
                y = ins[0] + ins[1]
            elif kind == "relu":
                y = jax.nn.relu(ins[0])
            elif kind == "partial_relu":
                # gather the active positions (public indices: local), ReLU them, and put them back
                # with a second gather: SPU lowers a scatter to a slow while loop, a gather stays flat
                flat = ins[0].reshape(ins[0].shape[0], -1)
                idx = arr[op["index"]]
                back = np.arange(flat.shape[1])
                back[idx] = flat.shape[1] + np.arange(idx.size)
                parts = [flat, jax.nn.relu(flat[:, idx])]
                if op.get("rest"):  # the other positions compute their polynomial, gathered alike
                    rest = arr[op["rest"]]
                    back[rest] = flat.shape[1] + idx.size + np.arange(rest.size)
                    parts.append(poly2(flat[:, rest], arr[op["c0"]], arr[op["c1"]], arr[op["c2"]]))
                y = jnp.concatenate(parts, axis=1)[:, back].reshape(ins[0].shape)
            elif kind == "poly2":
                shape = (1, -1) + (1,) * (ins[0].ndim - 2)  # one c0, c1, c2 per channel
                y = poly2(ins[0], *(arr[op[c]].reshape(shape) for c in ("c0", "c1", "c2")))
            elif kind == "avg_pool2d":
                y = avg_pool(ins[0], op)
            elif kind == "max_pool2d":
                y = max_pool(ins[0], op)
            elif kind == "mean":
                y = jnp.mean(ins[0], axis=tuple(op["dims"]), keepdims=op["keepdim"])
            elif kind == "flatten":
                start = op["start_dim"]
                y = ins[0].reshape(*ins[0].shape[:start], -1)
            elif kind == "gelu":
                y = jax.nn.gelu(ins[0], approximate=op["approximate"])
            elif kind in ELEMENTWISE:
                y = ELEMENTWISE[kind](ins[0])
            elif kind == "softmax":
                y = jax.nn.softmax(ins[0], axis=op["dim"])
            elif kind == "layer_norm":
                axes = tuple(range(-op["dims"], 0))
                centred = ins[0] - jnp.mean(ins[0], axis=axes, keepdims=True)
                y = centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=axes, keepdims=True) + op["eps"])
                if op["weight"]:
                    y = y * arr[op["weight"]]
                if op["bias"]:
                    y = y + arr[op["bias"]]
            elif kind == "mul":
                y = ins[0] * ins[1]
            elif kind == "scale":
                y = ins[0] * np.float32(op["factor"])
            elif kind == "matmul":
                y = jnp.matmul(ins[0], ins[1])
            elif kind == "transpose":
                y = jnp.swapaxes(ins[0], *op["dims"])
            elif kind == "permute":
                y = jnp.transpose(ins[0], op["dims"])
            else:
                raise ValueError(f"unknown op {kind}")
            vals[op["name"]] = y
        return vals[graph["output"]]

    return fn


# --- driver ------------------------------------------------------------------------------------
def _config(profile: bool = True):
    from spu import libspu

    config = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.CHEETAH, field=libspu.FieldType.FM64)
    config.fxp_fraction_bits = FRACTION_BITS
    config.enable_pphlo_profile = profile  # makes SPU log per-op and per-run link statistics
    return config


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def parse_party_log(text: str) -> list[dict]:
    """Splits one party's log into runs: execution time, link totals, per-op bytes."""
    runs, ops = [], {}
    exec_s = None
    for line in text.splitlines():
        if (m := EXEC_RE.search(line)):
            exec_s, ops = float(m.group(1)), {}
        elif (m := OP_RE.search(line)):
            name = m.group(1)
            rec = ops.setdefault(name, {"calls": 0, "seconds": 0.0, "send_bytes": 0, "recv_bytes": 0})
            rec["calls"] += int(m.group(2))
            rec["seconds"] += float(m.group(3))
            rec["send_bytes"] += int(m.group(4))
            rec["recv_bytes"] += int(m.group(5))
        elif (m := LINK_RE.search(line)):
            send, recv, sacts, racts = map(int, m.groups())
            runs.append({"exec_s": exec_s, "send_bytes": send, "recv_bytes": recv,
                         "send_actions": sacts, "recv_actions": racts, "ops": ops})
    return runs


def _load(workdir: Path):
    """The graph's JAX function fn(x, *float_arrays), its float arrays and the input."""
    graph = json.loads((workdir / "graph.json").read_text())
    with np.load(workdir / "arrays.npz") as data:
        arrays = {k: data[k] for k in data.files}
    x = np.load(workdir / "input.npy").astype(np.float32)
    # only float arrays are program inputs; integer ones (gather indices) are public constants
    names = [k for k, v in arrays.items() if v.dtype.kind == "f"]
    consts = {k: v for k, v in arrays.items() if v.dtype.kind != "f"}
    base = build_function(graph, names + list(consts))

    def fn(x, *params):
        return base(x, *params, *consts.values())

    return fn, [arrays[k] for k in names], x


def plain_output(workdir: Path) -> np.ndarray:
    import jax

    jax.config.update("jax_platforms", "cpu")
    fn, params, x = _load(workdir)
    return np.asarray(jax.jit(fn)(x, *params))


def _program(workdir: Path, mode: str, config):
    """Compiles one graph; returns its executable, per-rank input shares and plaintext output."""
    import jax
    import spu
    from spu import libspu
    from spu.utils import frontend as fe

    fn, params, x = _load(workdir)
    plain = np.asarray(jax.jit(fn)(x, *params))
    weight_vis = libspu.Visibility.VIS_PUBLIC if mode == "public-weights" else libspu.Visibility.VIS_SECRET
    input_names = ["x", *[f"w{i}" for i in range(len(params))]]
    visibility = [libspu.Visibility.VIS_SECRET, *[weight_vis] * len(params)]
    t0 = time.perf_counter()
    executable, _ = fe.compile(fe.Kind.JAX, fn, (x, *params), {}, input_names, visibility,
                               lambda outs: [f"out{i}" for i in range(len(outs))])
    compile_s = time.perf_counter() - t0
    io = spu.Io(2, config)
    shares = [io.make_shares(x, libspu.Visibility.VIS_SECRET)]
    shares += [io.make_shares(p, weight_vis) for p in params]
    per_rank = [
        {"executable": (executable.name, list(executable.input_names), list(executable.output_names), executable.code),
         "inputs": [(name, s[rank].meta, list(s[rank].share_chunks)) for name, s in zip(input_names, shares)]}
        for rank in (0, 1)
    ]
    return per_rank, plain, compile_s


def drive(workdirs: list[Path], mode: str, runs: int, timeout: float) -> list[dict]:
    """Runs every graph ``runs`` times in one process pair (one OT setup, in the first run of the first)."""
    import jax
    import spu
    from spu import libspu

    jax.config.update("jax_platforms", "cpu")
    config = _config()
    io = spu.Io(2, config)
    programs = [_program(w, mode, config) for w in workdirs]
    scratch = workdirs[0]
    for rank in (0, 1):
        (scratch / f"party{rank}.pkl").write_bytes(pickle.dumps([p[0][rank] for p in programs]))

    ports = _free_ports(2)
    procs = []
    for rank in (0, 1):
        log = open(scratch / f"party{rank}.log", "w")  # noqa: SIM115 (closed after the party exits)
        cmd = [sys.executable, __file__, "party", str(scratch), "--rank", str(rank),
               "--ports", ",".join(map(str, ports)), "--runs", str(runs)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    deadline = time.monotonic() + timeout
    failed = None
    for proc, log in procs:
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other, _ in procs:
                other.kill()
            rc = "timeout"
        log.close()
        if rc != 0 and failed is None:
            failed = rc
    logs = [(scratch / f"party{r}.log").read_text(errors="replace") for r in (0, 1)]
    if failed is not None:
        tail = " | ".join(logs[0].strip().splitlines()[-3:] + logs[1].strip().splitlines()[-3:])
        raise RuntimeError(f"SPU party failed ({failed}): {tail}")

    outs = [pickle.loads((scratch / f"party{r}.out.pkl").read_bytes()) for r in (0, 1)]
    per_party = [parse_party_log(text) for text in logs]
    results = []
    for k, (_, plain, compile_s) in enumerate(programs):
        out_shares = []
        for r in (0, 1):
            share = libspu.Share()
            share.meta, share.share_chunks = outs[r][k]["meta"], outs[r][k]["chunks"]
            out_shares.append(share)
        secure = np.asarray(io.reconstruct(out_shares))
        run_records = []
        for i in range(runs):
            p0, p1 = per_party[0][k * runs + i], per_party[1][k * runs + i]
            ops = {}
            for rec in (p0["ops"], p1["ops"]):
                for name, v in rec.items():
                    agg = ops.setdefault(name, {"calls": v["calls"], "seconds": 0.0, "bytes": 0})
                    agg["seconds"] = max(agg["seconds"], v["seconds"])
                    agg["bytes"] += v["send_bytes"]
            run_records.append({
                "wall_s": max(outs[0][k]["wall_s"][i], outs[1][k]["wall_s"][i]),
                "cpu_s_by_party": [outs[0][k]["cpu_s"][i], outs[1][k]["cpu_s"][i]],
                "exec_s": max(p0["exec_s"] or 0.0, p1["exec_s"] or 0.0),
                "bytes": p0["send_bytes"] + p1["send_bytes"],  # every byte either party put on the link
                "bytes_by_party": [p0["send_bytes"], p1["send_bytes"]],
                "messages": p0["send_actions"] + p1["send_actions"],
                # a party waits on the other at most once per message it receives: an upper bound on rounds
                "messages_by_party": [p0["send_actions"], p1["send_actions"]],
                "ops": ops,
            })
        results.append({
            "engine": f"spu {spu.__version__}", "protocol": "cheetah", "field": "FM64",
            "fraction_bits": FRACTION_BITS, "mode": mode, "compile_s": compile_s, "runs": run_records,
            "includes_setup": k == 0, "plain_output": plain.tolist(), "secure_output": secure.tolist(),
            "link_connect_s": max(outs[0][k]["connect_s"], outs[1][k]["connect_s"]),
        })
    return results


def party(workdir: Path, rank: int, ports: list[int], runs: int) -> None:
    import spu
    from spu import libspu

    programs = pickle.loads((workdir / f"party{rank}.pkl").read_bytes())
    desc = libspu.link.Desc()
    for r, port in enumerate(ports):
        desc.add_party(f"party{r}", f"127.0.0.1:{port}")
    desc.recv_timeout_ms = 10 * 60 * 1000
    desc.connect_retry_times = 120
    desc.connect_retry_interval_ms = 500
    t0 = time.perf_counter()
    link = libspu.link.create_brpc(desc, rank)
    connect_s = time.perf_counter() - t0
    runtime = spu.Runtime(link, _config())
    results = []
    for program in programs:
        name, input_names, output_names, code = program["executable"]
        executable = libspu.Executable(name=name, input_names=input_names, output_names=output_names, code=code)
        walls, cpus = [], []
        for _ in range(runs):
            for var, meta, chunks in program["inputs"]:
                share = libspu.Share()
                share.meta, share.share_chunks = meta, chunks
                runtime.set_var(var, share)
            t0, c0 = time.perf_counter(), time.process_time()
            runtime.run(executable)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)  # all threads of this party: less moved by others' load
        out = runtime.get_var(output_names[0])
        results.append({"meta": out.meta, "chunks": list(out.share_chunks), "wall_s": walls, "cpu_s": cpus,
                        "connect_s": connect_s})
        for var in [*input_names, *output_names]:
            runtime.del_var(var)
    tmp = workdir / f"party{rank}.out.pkl.tmp"
    tmp.write_bytes(pickle.dumps(results))
    os.replace(tmp, workdir / f"party{rank}.out.pkl")
    sys.stdout.flush()
    link.stop_link()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run_p = sub.add_parser("run")
    run_p.add_argument("workdirs", type=Path, nargs="+")
    run_p.add_argument("--mode", choices=["public-weights", "shared-weights"], default="public-weights")
    run_p.add_argument("--runs", type=int, default=3)
    run_p.add_argument("--timeout", type=float, default=600.0)
    plain_p = sub.add_parser("plain", help="evaluate the graphs in plaintext JAX only (converter check)")
    plain_p.add_argument("workdirs", type=Path, nargs="+")
    party_p = sub.add_parser("party")
    party_p.add_argument("workdir", type=Path)
    party_p.add_argument("--rank", type=int, required=True)
    party_p.add_argument("--ports", required=True)
    party_p.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.cmd == "plain":
        for workdir in args.workdirs:
            np.save(workdir / "plain.npy", plain_output(workdir))
        return 0
    if args.cmd == "party":
        party(args.workdir, args.rank, [int(p) for p in args.ports.split(",")], args.runs)
        return 0
    for workdir, result in zip(args.workdirs, drive(args.workdirs, args.mode, args.runs, args.timeout)):
        tmp = workdir / "result.json.tmp"
        tmp.write_text(json.dumps(result))
        os.replace(tmp, workdir / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
