"""Protocol profiles: the per-ReLU, per-MAC and per-layer constants of a 2PC protocol.

Every constant carries its source (see docs/pi.md). A profile can be overridden from a JSON or
TOML file (``{"base": "delphi", "relu_online_s": 2e-5, ...}``); ``relucut pi calibrate`` writes
such files from the user's own measurements.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

from relucut.errors import RelucutError


@dataclass(frozen=True)
class Profile:
    """Costs of one protocol. Times are seconds at ``ref_threads`` threads; bytes are per inference."""

    name: str
    description: str
    relu_online_s: float = 0.0
    relu_offline_s: float = 0.0
    relu_online_bytes: float = 0.0
    relu_offline_bytes: float = 0.0
    mac_online_s: float = 0.0
    mac_offline_s: float = 0.0
    mac_online_bytes: float = 0.0
    mac_offline_bytes: float = 0.0
    layer_online_s: float = 0.0  # fixed cost per ReLU layer (synchronisation, per-layer setup)
    rounds_per_layer: float = 2.0  # online round trips per ReLU layer
    # fixed-point engines (SPU) rescale every conv/linear/avg-pool output: a truncation protocol
    truncation_online_s: float = 0.0
    truncation_online_bytes: float = 0.0
    linear_layer_online_s: float = 0.0  # fixed cost per conv/linear layer
    rounds_per_linear_layer: float = 0.0
    gather_online_s: float = 0.0  # per element of a partially masked site (gather, compare, scatter back)
    setup_s: float = 0.0  # one-time per client session (e.g. silent-OT set-up), not per inference
    setup_bytes: float = 0.0
    client_storage_per_relu: float = 0.0  # bytes kept from offline to online
    server_storage_per_relu: float = 0.0
    ref_threads: int = 1  # threads the time constants were measured with
    bandwidth_bps: float = 1e9  # default link: bits per second
    rtt_s: float = 0.3e-3  # default round-trip time
    # per-element kinds (GELU, softmax, LayerNorm, ...: relucut.sites.SMOOTH_KINDS) this protocol prices,
    # each element as so many ReLUs ({"gelu": 12.0}) ...
    kind_relu_equivalents: dict[str, float] = field(default_factory=dict)
    # ... or by its own terms: kind -> {KIND_TERMS: per element, and per layer of that kind}
    kind_costs: dict[str, dict[str, float]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ARTIFACT = "public DELPHI artifact measurement (issue 6)"
TABLE4 = "fitted to DeepReDuce Table 4 latencies (ResNet18/CIFAR-100, DELPHI), docs/pi.md"
SLIDES = "DeepReDuce slides' operator table, from the DELPHI paper (USENIX Sec'20)"
SPU_HERE = "SPU 0.9.5 Cheetah on this project's 2-core machine, bench/results/spu_scaling.md"
SPU_FIT = "SPU 0.9.5 Cheetah, public weights, 2 shared cores, bench/results/spu_calibration.md"
# hardsigmoid(x) = clamp(x / 6 + 1/2, 0, 1): two comparisons, as ReLU6 (the scale and shift are public)
HARDSIGMOID = {"hardsigmoid": 2.0}
NO_SQUARE_PRICE = ("no public per-element cost of a product of two secret shares in {engine} (its papers price "
                   "comparisons, truncations and linear layers only): polynomial positions (poly2) stay unpriced "
                   "and estimates with them say they are a lower bound; calibrate_kinds fits them from measurements")
HARDSIGMOID_SOURCE = "exact: hardsigmoid is clamp(x/6 + 1/2, 0, 1), two comparisons as ReLU6 (public scale and shift)"
CHEETAH_ROW = ("Cheetah paper (Huang et al., USENIX Security'22, eprint 2022/207) abstract: ResNet50 end to end under "
               "WAN in under 2.5 min with 2.3 GB, 5.6x faster and 12.9x less communication than CrypTFlow2; WAN = "
               "the authors' OpenCheetah scripts/throttle.sh (400 Mbit/s, 40 ms RTT), 4 threads (scripts/common.sh)")
OPENCHEETAH_OPS = ("OpenCheetah ResNet50 per-op times, 4 threads (github.com/Alibaba-Gemini-Lab/OpenCheetah issue 26): "
                   "ReLU 47.0 s + MaxPool 7.6 s of 270.8 s, the rest convolutions, BN, truncation")
SPU_FITTED = ("relu_online_s", "relu_online_bytes", "mac_online_s", "mac_online_bytes", "truncation_online_s",
              "truncation_online_bytes", "layer_online_s", "linear_layer_online_s", "gather_online_s",
              "rounds_per_layer", "rounds_per_linear_layer")

# per-element kinds under SPU 0.9.5 Cheetah (public weights): bench/spu_kinds.py's fit on what the other terms
# leave of 27 single-kind networks, checked on 4 blocks it never saw (ViT, MBConv, MobileNetV3, ConvNeXt);
# 3 significant digits (tests/test_pi_kind_costs.py checks them against bench/results/spu_kinds.json)
SPU_KIND_COSTS = {
    "gelu": {"online_s": 9.97e-4, "online_bytes": 14500.0, "layer_online_s": 0.852, "layer_online_bytes": 1.13e7,
             "rounds_per_layer": 1140.0},
    "hardsigmoid": {"online_s": 4.01e-5, "online_bytes": 202.0, "layer_online_s": 0.0409, "layer_online_bytes": 0.0,
                    "rounds_per_layer": 89.4},
    "hardswish": {"online_s": 5.86e-5, "online_bytes": 422.0, "layer_online_s": 0.0276, "layer_online_bytes": 4.41e5,
                  "rounds_per_layer": 116.0},
    "layernorm": {"online_s": 9.4e-6, "online_bytes": 416.0, "layer_online_s": 0.108, "layer_online_bytes": 1.03e6,
                  "rounds_per_layer": 63.2},
    "matmul": {"online_s": 1.6e-6, "online_bytes": 0.0484, "layer_online_s": 0.0178, "layer_online_bytes": 8.78e5,
               "rounds_per_layer": 2.89},
    "mul": {"online_s": 1.7e-6, "online_bytes": 206.0, "layer_online_s": 0.0353, "layer_online_bytes": 5.08e5,
            "rounds_per_layer": 10.3},
    # bench/spu_poly.py: ResNet18 networks whose linearized positions compute c0 + x (c1 + c2 x), checked on
    # ResNet20, a HybReNet, channel masks and 32x32 culls (tests/test_pi_poly.py against spu_poly.json)
    "poly2": {"online_s": 8.77e-6, "online_bytes": 315.0, "layer_online_s": 0.0, "layer_online_bytes": 0.0,
              "rounds_per_layer": 3.66},
    "sigmoid": {"online_s": 4.83e-4, "online_bytes": 3150.0, "layer_online_s": 0.255, "layer_online_bytes": 1.04e7,
                "rounds_per_layer": 485.0},
    "silu": {"online_s": 3.92e-4, "online_bytes": 3480.0, "layer_online_s": 0.482, "layer_online_bytes": 1.03e7,
             "rounds_per_layer": 762.0},
    "softmax": {"online_s": 4.71e-4, "online_bytes": 3620.0, "layer_online_s": 0.469, "layer_online_bytes": 1.03e7,
                "rounds_per_layer": 654.0},
}
SPU_KINDS = "SPU 0.9.5 Cheetah, public weights, bench/results/spu_kinds.md: amortised over every warm run"
# a polynomial position (poly2: c0 + x (c1 + c2 x), AutoReP's linearization) is one quadratic activation in
# DELPHI: the slides' operator table (from the DELPHI paper) gives a quad's costs beside a ReLU's, single-threaded
DELPHI_QUAD = {"poly2": {"online_s": 0.03e-6, "offline_s": 6e-6, "online_bytes": 8.0, "offline_bytes": 152.0,
                         "rounds_per_layer": 1.0}}
DELPHI_QUAD_SOURCE = (f"{SLIDES}: Quad 6 us preprocessing and 0.03 us online, 0.152 KB preprocessing and 0.008 KB "
                      "online (ReLU: 154.9 / 85.3 us, 17.5 / 2.048 KB); rounds_per_layer: assumption, one opening of "
                      "Beaver's multiplication per layer (DELPHI computes quads with preprocessed Beaver triples)")

PROFILES: dict[str, Profile] = {
    "delphi": Profile(
        name="delphi",
        description="DELPHI (HE offline, GC ReLUs); artifact constants, per-layer/per-MAC terms fit to DeepReDuce Table 4",
        relu_online_s=18.3e-6, relu_offline_s=154.9e-6,
        relu_online_bytes=1184, relu_offline_bytes=19088,
        mac_online_s=0.42e-9, mac_offline_s=0.5e-6, mac_offline_bytes=0.7146,
        layer_online_s=0.035, rounds_per_layer=2,
        client_storage_per_relu=19088, server_storage_per_relu=2 * 16 * 41,
        ref_threads=1,
        kind_relu_equivalents=HARDSIGMOID,
        kind_costs=DELPHI_QUAD,
        sources={
            "kind_relu_equivalents": HARDSIGMOID_SOURCE,
            "kind_costs": DELPHI_QUAD_SOURCE,
            "relu_online_s": f"{ARTIFACT}: 18.3 us client GC evaluation per ReLU",
            "relu_online_bytes": f"{ARTIFACT}: 1,184 B online per ReLU",
            "relu_offline_bytes": f"{ARTIFACT}: 19,088 B offline per ReLU",
            "relu_offline_s": f"{SLIDES}: 154.9 us preprocessing per ReLU",
            "mac_offline_s": f"{ARTIFACT}: HE offline 0.4-0.7 us per MAC per thread (midpoint)",
            "mac_offline_bytes": "artifact resnet18/CIFAR offline total 11.03 GB minus 557,056 x 19,088 B of "
                                 "garbled circuits = 0.397 GB of HE traffic, spread over its 555.5M MACs",
            "mac_online_s": TABLE4,
            "layer_online_s": TABLE4,
            "client_storage_per_relu": "the client keeps each garbled circuit it received offline",
            "server_storage_per_relu": "assumption: the server keeps 2 wire labels of 16 B per bit of a 41-bit share",
        },
    ),
    "delphi-slides": Profile(
        name="delphi-slides",
        description="DELPHI per-operator table from the slides (single-threaded)",
        relu_online_s=85.3e-6, relu_offline_s=154.9e-6,
        relu_online_bytes=2048, relu_offline_bytes=17500,
        mac_online_s=6.77e-9, mac_offline_s=0.524e-6, mac_online_bytes=0.0282, mac_offline_bytes=4.5,
        rounds_per_layer=2, client_storage_per_relu=17500, ref_threads=1,
        kind_relu_equivalents=HARDSIGMOID,
        kind_costs=DELPHI_QUAD,
        sources={"kind_relu_equivalents": HARDSIGMOID_SOURCE, "kind_costs": DELPHI_QUAD_SOURCE,
                 **{k: SLIDES for k in ("relu_online_s", "relu_offline_s", "relu_online_bytes", "relu_offline_bytes",
                                        "mac_online_s", "mac_offline_s", "mac_online_bytes", "mac_offline_bytes")}},
    ),
    "sci": Profile(
        name="sci",
        description="CrypTFlow2/SCI_HE (OT-based ReLU, HE linear layers, no offline phase); per-MAC terms fit to "
                    "the Cheetah paper's ResNet50 comparison",
        relu_online_s=20e-6, relu_online_bytes=570,
        mac_online_s=147e-9, mac_online_bytes=5.69,
        rounds_per_layer=8, ref_threads=4,
        kind_relu_equivalents=HARDSIGMOID,
        sources={
            "kind_relu_equivalents": HARDSIGMOID_SOURCE,
            "kind_costs": NO_SQUARE_PRICE.format(engine="CrypTFlow2/SCI"),
            "relu_online_bytes": "issue 6: CrypTFlow2/SCI about 540-600 B per ReLU (midpoint)",
            "relu_online_s": "assumption (no public per-ReLU time at hand); calibrate with `relucut pi calibrate`",
            "mac_online_s": f"{CHEETAH_ROW}: 5.6 x 150 s = 840 s for torchvision ResNet50 (11.2M comparisons, "
                            "4.09G MACs, 50 layers), less the ReLUs at 20 us and 50 x 8 rounds of 40 ms, per MAC",
            "mac_online_bytes": f"{CHEETAH_ROW}: 12.9 x 2.3 GB = 29.7 GB less 570 B per comparison, per MAC "
                                "(HE traffic follows activations really: a stand-in)",
            "rounds_per_layer": "assumption: log-depth millionaires' comparison, about 8 rounds",
        },
    ),
    "cheetah": Profile(
        name="cheetah",
        description="Cheetah (silent-OT ReLU, HE linear layers with the server's weights), fit to the paper's "
                    "ResNet50 row at 4 threads",
        relu_online_s=2.40e-6, relu_online_bytes=55,
        mac_online_s=26.1e-9, mac_online_bytes=0.412,
        layer_online_s=0.005, rounds_per_layer=8,
        setup_s=2.7, setup_bytes=3.5e6, ref_threads=4,
        kind_relu_equivalents=HARDSIGMOID,
        sources={
            "kind_relu_equivalents": HARDSIGMOID_SOURCE,
            "kind_costs": NO_SQUARE_PRICE.format(engine="Cheetah"),
            "relu_online_bytes": "issue 6: Cheetah about 52-59 B per ReLU (midpoint)",
            "mac_online_bytes": f"{CHEETAH_ROW}: 2.3 GB for torchvision ResNet50 less 55 B per comparison (11.2M), "
                                "per MAC (4.09G; HE and truncation traffic follow activations really: a stand-in)",
            "relu_online_s": f"{CHEETAH_ROW}; {OPENCHEETAH_OPS}: 150 s less 50 x 8 rounds of 40 ms, 20 % of it "
                             "over 11.2M comparisons",
            "mac_online_s": f"{CHEETAH_ROW}; {OPENCHEETAH_OPS}: the other 80 % over 4.09G MACs",
            "setup_bytes": "issue 6: one-time silent-OT set-up about 3.5 MB",
            "layer_online_s": "SPU 0.9.5, tiny resnets of tests/test_pi_measure.py: warm time left after comparisons "
                              "and convolutions, about 5 ms per ReLU layer",
            "setup_s": "SPU 0.9.5 first run minus warm run, tiny resnet (tests/test_pi_measure.py); larger "
                       "networks pay more because SPU makes OT correlations as it needs them",
            "rounds_per_layer": "assumption: log-depth millionaires' comparison, about 8 rounds",
        },
    ),
    "spu-cheetah": Profile(
        name="spu-cheetah",
        description="SecretFlow SPU 0.9.5's Cheetah with public weights, every constant fitted to its measurements "
                    "here (bench/spu_calibration.py): CPU seconds of the busier party, loopback",
        relu_online_s=3.1e-05, relu_online_bytes=98.5,
        mac_online_s=1.04e-08, mac_online_bytes=0.0,
        truncation_online_s=2.61e-06, truncation_online_bytes=3.13,
        layer_online_s=0.00548, linear_layer_online_s=0.0114,
        gather_online_s=7.43e-06,
        rounds_per_layer=21.0, rounds_per_linear_layer=1.11,
        setup_s=2.7, setup_bytes=2.6e6, ref_threads=1, rtt_s=0.0,
        kind_costs=SPU_KIND_COSTS,
        sources={
            "kind_costs": f"{SPU_KINDS}; fitted by relucut.pi.calibrate.calibrate_kinds (GELU, SiLU, sigmoid, "
                          "Hardswish, Hardsigmoid, softmax, LayerNorm, products and matmul of two activations); "
                          "poly2: bench/results/spu_poly.md, the same fit on ResNet18s with polynomial positions",
            **{key: f"{SPU_FIT}: `relucut pi calibrate` on the in-sample networks" for key in SPU_FITTED},
            "relu_online_bytes": f"{SPU_FIT}: a comparison (82.25 B, pphlo.less) plus a multiplexer (16.25 B)",
            "truncation_online_bytes": f"{SPU_FIT}: the truncation after each public-weight product (pphlo.convolution)",
            "rounds_per_layer": f"{SPU_FIT}: the larger party's messages per ReLU layer (an upper bound on rounds)",
            "ref_threads": "CPU seconds (all threads of the busier party): time at one core per party",
            "rtt_s": "0: the fitted per-layer times hold loopback's round trips; pass another link's RTT",
            "setup_bytes": f"{SPU_HERE}: first run minus warm run, full network",
            "setup_s": "as the cheetah profile",
        },
    ),
}

FIELDS = {f.name for f in fields(Profile)}
NUMERIC = FIELDS - {"name", "description", "sources", "ref_threads", "kind_relu_equivalents", "kind_costs"}
# a kind's own terms: per element (seconds at ref_threads, bytes) and per layer of that kind
KIND_TERMS = ("online_s", "online_bytes", "offline_s", "offline_bytes", "layer_online_s", "layer_online_bytes",
              "rounds_per_layer")


def profile_names() -> list[str]:
    return list(PROFILES)


def get_profile(name: str) -> Profile:
    """The shipped profile of an engine name (case and '_' vs '-' do not matter)."""
    key = str(name).strip().lower().replace("_", "-")
    try:
        return PROFILES[key]
    except KeyError:
        raise RelucutError(f"unknown protocol '{name}'; use one of: {', '.join(PROFILES)} "
                           "(or a profile file from `relucut pi calibrate`)") from None


def with_overrides(profile: Profile, overrides: dict[str, Any]) -> Profile:
    unknown = sorted(set(overrides) - FIELDS - {"base", "fit"})
    if unknown:
        raise RelucutError(f"unknown profile field(s) {', '.join(unknown)}; valid: {', '.join(sorted(NUMERIC))}")
    values = {}
    for key, value in overrides.items():
        if key in ("base", "fit"):
            continue
        if key in NUMERIC:
            value = _non_negative(value, f"profile field {key}")
        elif key == "ref_threads":
            value = int(value)
        elif key == "kind_relu_equivalents":
            value = _kind_table(value)
        elif key == "kind_costs":  # a file adds or replaces kinds; the base's other kinds stay priced
            value = {**profile.kind_costs, **_kind_costs(value)}
        values[key] = value
    return replace(profile, **values)


def _kind_table(value: Any) -> dict[str, float]:
    """A profile's per-kind table: smooth kind -> ReLU-equivalents per element, each >= 0."""
    from relucut.sites import SMOOTH_KINDS

    if not isinstance(value, dict):
        raise RelucutError("profile field kind_relu_equivalents must be a table of kind = ReLUs per element")
    table = {}
    for kind, ratio in value.items():
        if kind not in SMOOTH_KINDS:
            raise RelucutError(f"kind_relu_equivalents has unknown kind '{kind}'; use: {', '.join(SMOOTH_KINDS)}")
        table[kind] = _non_negative(ratio, f"kind_relu_equivalents.{kind}")
    return table


def _kind_costs(value: Any) -> dict[str, dict[str, float]]:
    """A profile's per-kind terms: kind -> {term: value >= 0} with terms from KIND_TERMS."""
    from relucut.sites import SMOOTH_KINDS

    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise RelucutError("profile field kind_costs must be a table of kind = {online_s = ..., online_bytes = ...}")
    table = {}
    for kind, terms in value.items():
        if kind not in SMOOTH_KINDS:
            raise RelucutError(f"kind_costs has unknown kind '{kind}'; use: {', '.join(SMOOTH_KINDS)}")
        unknown = sorted(set(terms) - set(KIND_TERMS))
        if unknown:
            raise RelucutError(f"kind_costs.{kind} has unknown term(s) {', '.join(unknown)}; use: {', '.join(KIND_TERMS)}")
        table[kind] = {term: _non_negative(v, f"kind_costs.{kind}.{term}") for term, v in terms.items()}
    return table


def _non_negative(value: Any, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise RelucutError(f"{name} must be a number, got {value!r}") from None
    if value < 0:
        raise RelucutError(f"{name} must be >= 0, got {value}")
    return value


def load_profile(path: str | Path) -> Profile:
    """Reads a profile file: a 'base' protocol (default delphi) plus fields to override."""
    path = Path(path)
    if not path.exists():
        raise RelucutError(f"profile file {path} not found; write one with `relucut pi calibrate` or by hand")
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RelucutError(f"profile file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise RelucutError(f"profile file {path} must hold one object of profile fields")
    base = get_profile(str(data.get("base", "delphi")))
    data = {**data, "name": data.get("name", base.name)}
    return with_overrides(base, data)


def resolve_profile(protocol: str | Profile | None = "delphi", profile_file: str | Path | None = None) -> Profile:
    if isinstance(protocol, Profile):
        return protocol
    if profile_file is not None:
        return load_profile(profile_file)
    return get_profile(protocol or "delphi")
