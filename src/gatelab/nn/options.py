"""The keyword-only options of the LSTM family (issue 7): checks, new parameters, masks.

One `Options` value per module holds every option, checked once in the constructor. It
knows which CellSpec fields the options set, which parameters they add (names, shapes,
initial values) and how the stochastic options draw their masks. The equations are in the
docstring of `gatelab.engines` ("The LSTM family"); the summary, with sources:

    forget_bias=b        b_f starts at b: the f rows of bias_ih are set to b and those of
                         bias_hh to 0, so b_ih + b_hh = b (Gers et al. 2000; Jozefowicz
                         et al. 2015 recommend 1.0). LSTM only; needs bias=True.
    peephole=True        a_f += p_f ⊙ c_{t-1}, a_i += p_i ⊙ c_{t-1}, a_o += p_o ⊙ c̃_t
                         (Gers & Schmidhuber 2000). New: weight_ph (3, H), rows p_f|p_i|p_o.
    layer_norm=True      a = LN(x W_ih^T) + LN(h W_hh^T) + b_ih + b_hh; LSTM h = o ⊙ φ(LN(c̃_t))
                         (Ba et al. 2016). New: ln_ih_weight, ln_ih_bias, ln_hh_weight,
                         ln_hh_bias (G*H,), LSTM ln_c_weight, ln_c_bias (H,); gains 1, biases 0.
    coupled_gates=True   i = 1 - f (CIFG, Greff et al. 2017). LSTM only.
    remove={...}         ablations of Greff et al. 2017 (subset of gatelab.engines.ABLATIONS),
                         also as no_forget_gate, no_input_gate, no_output_gate,
                         no_output_activation, no_candidate_activation. LSTM only.
    gate_activation=     σ by name: "sigmoid" | "hard_sigmoid".
    cell_activation=     φ by name: "tanh" | "softsign".
    zoneout=p | (p_h, p_c)   per step and unit, keep the previous state with probability p
                         (Krueger et al. 2016); evaluation uses the expectation (mask = p).
                         GRU: one probability (it has no cell).
    recurrent_dropout=p  one scaled Bernoulli mask d per sequence on h_{t-1} inside the
                         recurrent product (Gal & Ghahramani 2016); identity in evaluation.
    weight_drop=p        DropConnect on weight_hh, W_hh ⊙ M / (1 - p), one M per forward
                         call and layer-direction (Merity et al. 2018, AWD-LSTM); identity in
                         evaluation.
    reset_after=False    the GRU of Cho et al. 2014: r multiplies h_{t-1} before W_hn. GRU only.

Wrong types raise TypeError, wrong values ValueError, each naming the option, what was
expected and what was received.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields

import torch

from gatelab import engines
from gatelab.engines import masks as engine_masks

GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
CELL_ACTIVATIONS = ("tanh", "softsign")
NO_FLAGS = {f"no_{part}": part for part in engines.ABLATIONS}  # no_forget_gate -> "forget_gate"
LSTM_ONLY = ("forget_bias", "peephole", "coupled_gates", "remove")
GRU_ONLY = ("reset_after",)
MASK_NAMES = ("weight_hh", "recurrent_dropout", "zoneout_h", "zoneout_c")  # the order they are drawn in


@dataclass(frozen=True)
class Options:
    """Every LSTM-family option of one module; the defaults are torch.nn's cell.

    Arguments:
        forget_bias: None (torch.nn's init) or the initial b_f.
        peephole, layer_norm, coupled_gates: the CellSpec fields.
        remove: frozenset of parts removed (gatelab.engines.ABLATIONS).
        gate_activation, cell_activation: names of σ and φ.
        zoneout: (p_h, p_c), probabilities of keeping the previous h and c.
        recurrent_dropout: p of the per-sequence mask on h_{t-1}.
        weight_drop: p of DropConnect on weight_hh.
        reset_after: GRU form.
    """

    forget_bias: float | None = None
    peephole: bool = False
    layer_norm: bool = False
    coupled_gates: bool = False
    remove: frozenset = field(default_factory=frozenset)
    gate_activation: str = "sigmoid"
    cell_activation: str = "tanh"
    zoneout: tuple = (0.0, 0.0)
    recurrent_dropout: float = 0.0
    weight_drop: float = 0.0
    reset_after: bool = True

    def spec_fields(self) -> dict:
        """The CellSpec fields these options set."""
        return dict(peephole=self.peephole, layer_norm=self.layer_norm, coupled_gates=self.coupled_gates,
                    remove=self.remove, gate_activation=self.gate_activation,
                    cell_activation=self.cell_activation, reset_after=self.reset_after)

    @property
    def stochastic(self) -> bool:
        """True when a forward in training mode draws random masks."""
        return any(self.zoneout) or self.recurrent_dropout > 0 or self.weight_drop > 0

    def non_defaults(self) -> dict:
        """The options that differ from torch.nn's cell, for repr."""
        default = Options()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


def parse(mode: str, *, bias: bool = True, forget_bias=None, peephole=False, layer_norm=False,
          coupled_gates=False, remove=(), no_forget_gate=False, no_input_gate=False,
          no_output_gate=False, no_output_activation=False, no_candidate_activation=False,
          gate_activation="sigmoid", cell_activation="tanh", zoneout=0.0, recurrent_dropout=0.0,
          weight_drop=0.0, reset_after=True) -> Options:
    """Check the options of a `mode` ("LSTM", "GRU", "RNN_TANH", "RNN_RELU") module.

    Arguments: the keyword options of gatelab.nn.LSTM / GRU (module docstring), plus
        mode and bias (forget_bias needs the biases).
    Returns the Options; raises TypeError / ValueError naming the option.
    """
    for name, value in (("peephole", peephole), ("layer_norm", layer_norm), ("coupled_gates", coupled_gates),
                        ("reset_after", reset_after), ("no_forget_gate", no_forget_gate),
                        ("no_input_gate", no_input_gate), ("no_output_gate", no_output_gate),
                        ("no_output_activation", no_output_activation),
                        ("no_candidate_activation", no_candidate_activation)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}: expected True or False, got {value!r}")
    parts = _parts(remove)
    flags = dict(no_forget_gate=no_forget_gate, no_input_gate=no_input_gate, no_output_gate=no_output_gate,
                 no_output_activation=no_output_activation, no_candidate_activation=no_candidate_activation)
    parts |= {NO_FLAGS[k] for k, on in flags.items() if on}
    if coupled_gates and "input_gate" in parts:
        raise ValueError("remove: expected 'input_gate' to stay with coupled_gates=True (i = 1 - f), "
                         "got it removed")
    _check_name("gate_activation", gate_activation, GATE_ACTIVATIONS)
    _check_name("cell_activation", cell_activation, CELL_ACTIVATIONS)
    if forget_bias is not None:
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, numbers.Real):
            raise TypeError(f"forget_bias: expected None or a real number, got {forget_bias!r}")
        if not math.isfinite(forget_bias):
            raise ValueError(f"forget_bias: expected a finite number, got {forget_bias!r}")
        if not bias:
            raise ValueError(f"forget_bias: expected bias=True (the forget bias lives in bias_ih), "
                             f"got bias=False and forget_bias={forget_bias!r}")
        forget_bias = float(forget_bias)
    zoneout = _zoneout(mode, zoneout)
    recurrent_dropout = _probability("recurrent_dropout", recurrent_dropout)
    weight_drop = _probability("weight_drop", weight_drop)
    if mode == "GRU" and layer_norm and not reset_after:
        raise ValueError("layer_norm: expected reset_after=True with layer_norm=True (under reset_after=False "
                         "the n rows of the recurrent product depend on r), got reset_after=False")
    options = Options(forget_bias=forget_bias, peephole=peephole, layer_norm=layer_norm,
                      coupled_gates=coupled_gates, remove=frozenset(parts), gate_activation=gate_activation,
                      cell_activation=cell_activation, zoneout=zoneout, recurrent_dropout=recurrent_dropout,
                      weight_drop=weight_drop, reset_after=reset_after)
    _check_mode(mode, options)
    return options


def _parts(remove) -> set:
    if isinstance(remove, str) or not isinstance(remove, (set, frozenset, list, tuple)):
        raise TypeError(f"remove: expected a set of parts from {engines.ABLATIONS}, got {remove!r}")
    unknown = sorted(str(p) for p in remove if p not in engines.ABLATIONS)
    if unknown:
        raise ValueError(f"remove: expected parts from {engines.ABLATIONS}, got unknown {unknown}")
    return set(remove)


def _check_name(option: str, value, allowed: tuple) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{option}: expected one of {allowed}, got {value!r}")
    if value not in allowed:
        raise ValueError(f"{option}: expected one of {allowed}, got {value!r}")


def _probability(option: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{option}: expected a probability in [0, 1), got {value!r}")
    if not 0 <= value < 1:
        raise ValueError(f"{option}: expected a probability in [0, 1), got {value!r}")
    return float(value)


def _zoneout(mode: str, zoneout) -> tuple:
    """(p_h, p_c) from a float (both) or a pair; the GRU takes one probability (p_c = 0)."""
    if isinstance(zoneout, (tuple, list)):
        if len(zoneout) != 2:
            raise ValueError(f"zoneout: expected a probability or a pair (p_h, p_c), got {zoneout!r}")
        if mode != "LSTM":
            raise ValueError(f"zoneout: expected one probability for {mode} (it has no cell state), got {zoneout!r}")
        return (_probability("zoneout", zoneout[0]), _probability("zoneout", zoneout[1]))
    p = _probability("zoneout", zoneout)
    return (p, p) if mode == "LSTM" else (p, 0.0)


def _check_mode(mode: str, options: Options) -> None:
    """Options that do not apply to `mode` raise ValueError (as torch.nn does for proj_size)."""
    set_ = options.non_defaults()
    if mode.startswith("RNN") and set_:
        raise ValueError(f"{sorted(set_)}: the LSTM-family options apply to LSTM and GRU, not RNN")
    wrong = [k for k in (LSTM_ONLY if mode == "GRU" else GRU_ONLY if mode == "LSTM" else ()) if k in set_]
    if wrong:
        owner = "LSTM" if mode == "GRU" else "GRU"
        raise ValueError(f"{wrong[0]}: applies to the {owner} only, not {mode}, got {set_[wrong[0]]!r}")


def extra_shapes(mode: str, options: Options, hidden_size: int) -> dict:
    """The parameters the options add to one layer-direction: base name -> shape."""
    G = engines.GATE_ROWS[mode]
    shapes = {}
    if options.peephole:
        shapes["weight_ph"] = (3, hidden_size)  # rows p_f|p_i|p_o
    if options.layer_norm:
        shapes.update(ln_ih_weight=(G * hidden_size,), ln_ih_bias=(G * hidden_size,),
                      ln_hh_weight=(G * hidden_size,), ln_hh_bias=(G * hidden_size,))
        if mode == "LSTM":
            shapes.update(ln_c_weight=(hidden_size,), ln_c_bias=(hidden_size,))
    return shapes


@torch.no_grad()
def initialise(name: str, param: torch.Tensor, options: Options, hidden_size: int) -> None:
    """Initial value of one parameter after torch.nn's U(-√k, √k): layer-norm gains 1 and
    biases 0; with forget_bias, rows H..2H (f in i|f|g|o) of bias_ih = b, of bias_hh = 0.

    Arguments:
        name: the parameter's base name (no _l{k} / _reverse suffix).
        param: the parameter, already drawn from U(-√k, √k).
        options: the module's Options.   hidden_size: H.
    """
    if name.startswith("ln_"):
        param.fill_(1.0 if name.endswith("_weight") else 0.0)
    elif options.forget_bias is not None and name in ("bias_ih", "bias_hh"):
        H = hidden_size
        param[H: 2 * H] = options.forget_bias if name == "bias_ih" else 0.0


def drop_weight(weight_hh: torch.Tensor, mask) -> torch.Tensor:
    """DropConnect: weight_hh ⊙ mask, mask = M / (1 - p) (None: weight_hh unchanged)."""
    return weight_hh if mask is None else weight_hh * mask


def draw_masks(options: Options, T: int, B: int, hidden_size: int, out_size: int, weight_shape: tuple,
               *, training: bool, dtype, device, defer: bool = False) -> dict:
    """The masks of one layer-direction, drawn from torch's global RNG (like dropout).

    Drawn in this order, only for the options that are on (weight_drop and recurrent_dropout
    by keep_mask, zoneout's by uniform_below: uniform 32-bit integers U, seeded from torch's RNG):
        weight_hh (G*H, H_out)   M / (1 - p_w), M ~ Bernoulli(1 - p_w)           training only
        recurrent_dropout (B, H_out)  d / (1 - p_d), d ~ Bernoulli(1 - p_d)      training only
        zoneout_h (T, B, H_out)  ~ Bernoulli(p_h), 1 = keep h_{t-1}; eval: p_h everywhere
        zoneout_c (T, B, H)      ~ Bernoulli(p_c), 1 = keep c_{t-1}; eval: p_c everywhere

    Arguments:
        options: the module's Options.   T, B: steps and batch.   hidden_size: H.
        out_size: H_out (proj_size or H).   weight_shape: the shape of weight_hh.
        training: the module's flag.   dtype, device: of the input.
        defer: zoneout's masks on the CPU as engines.masks.Deferred (seed drawn, not yet filled).
    Returns a dict (empty when nothing is on).
    """
    masks = {}
    kw = dict(dtype=dtype, device=device)
    if training:
        for name, p, shape in (("weight_hh", options.weight_drop, weight_shape),
                               ("recurrent_dropout", options.recurrent_dropout, (B, out_size))):
            if p > 0:
                masks[name] = keep_mask(shape, p, **kw)
    p_h, p_c = options.zoneout
    for name, p, shape in (("zoneout_h", p_h, (T, B, out_size)), ("zoneout_c", p_c, (T, B, hidden_size))):
        if p > 0:
            if training and defer and torch.device(device or "cpu").type == "cpu":
                masks[name] = engine_masks.Deferred(_seed(), p, shape, dtype)
            elif training:
                masks[name] = uniform_below(shape, p, dtype=dtype, device=device)
            else:
                masks[name] = torch.full(shape, p, **kw)
    return masks


def uniform_below(shape, p: float, *, dtype, device) -> torch.Tensor:
    """A Bernoulli(p) mask in `dtype`: 1 where U < ⌊p 2^32⌋, U a uniform 32-bit integer (so
    P(1) is p to within 2^-32). zoneout's masks.

    On the CPU, U comes from SplitMix64 (gatelab.engines._kernels_rng) started at a seed
    drawn from torch's global RNG (so torch.manual_seed replays it), element k from output
    k // 2 alone, filled on the engine's threads: the same mask whatever the thread count.
    A (100, 32, 256) mask, 2 threads: 0.36 ms, against 3.5 with torch.rand (whose one
    generator runs on one thread) and 0.87 with NumPy's SFC64 streams. Elsewhere torch.rand
    on the device.
    """
    if torch.device(device or "cpu").type != "cpu":
        return torch.rand(shape, device=device).lt_(p).to(dtype)
    return _draw(shape, p, dtype, keep=False)


def keep_mask(shape, p: float, *, dtype, device) -> torch.Tensor:
    """Dropout's scaled keep mask in `dtype`: 1 / (1 - p) where U >= ⌊p 2^32⌋, else 0 (an
    element is dropped with probability p to within 2^-32); U as in uniform_below.
    recurrent_dropout's (B, H_out) and weight_drop's (G*H, H_out) masks: a (512, 128) mask
    in 0.07 ms against 0.64 with Tensor.bernoulli_ (~10 ns an element here, most of
    weight_drop's cost at (50,16,64,128)). Elsewhere bernoulli_ on the device."""
    if torch.device(device or "cpu").type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1.0 - p).div_(1.0 - p)
    return _draw(shape, p, dtype, keep=True)


def _seed() -> int:
    """A mask's SplitMix64 seed, from torch's global RNG."""
    return int(torch.randint(0, 1 << 62, (1,), dtype=torch.int64))


def _draw(shape, p: float, dtype, keep: bool) -> torch.Tensor:
    """uniform_below (keep False: 1 where U < ⌊p 2^32⌋) or keep_mask (keep True: 1 / (1 - p)
    where U >= ⌊p 2^32⌋) on the CPU: U from SplitMix64 (engines._kernels_rng) at a seed
    drawn from torch's global RNG, filled on the engine's threads."""
    return engine_masks.fill(_seed(), shape, p, dtype, keep)


def check_given_masks(given: dict, expected: dict, where: str) -> dict:
    """Masks passed to forward(masks=...): keys and shapes as the module would draw them.

    Arguments:
        given: name -> tensor, for one layer-direction.
        expected: name -> shape, what this module draws.
        where: for the message, e.g. "masks[1]".
    """
    if not isinstance(given, dict):
        raise TypeError(f"{where}: expected a dict with keys from {tuple(expected)}, got {type(given).__name__}")
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise ValueError(f"{where}: expected keys from {tuple(expected)}, got unknown {unknown}")
    for name, mask in given.items():
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(expected[name]):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{where}[{name!r}]: expected a tensor of shape {tuple(expected[name])}, got {got}")
    return dict(given)


def mask_shapes(mode: str, T: int, B: int, hidden_size: int, out_size: int, weight_shape: tuple) -> dict:
    """name -> shape of every mask a `mode` layer-direction can take (LSTM: all four; GRU: no
    zoneout_c), in the order draw_masks draws them."""
    shapes = {"weight_hh": tuple(weight_shape), "recurrent_dropout": (B, out_size),
              "zoneout_h": (T, B, out_size), "zoneout_c": (T, B, hidden_size)}
    if mode != "LSTM":
        del shapes["zoneout_c"]
    return shapes


KNOWN_OPTIONS = ("forget_bias", "peephole", "layer_norm", "coupled_gates", "remove", "no_forget_gate",
                 "no_input_gate", "no_output_gate", "no_output_activation", "no_candidate_activation",
                 "gate_activation", "cell_activation", "zoneout", "recurrent_dropout", "weight_drop",
                 "reset_after")


def parse_keywords(cls_name: str, mode: str, bias, options: dict):
    """opts.parse, with TypeError for a keyword that is no option (as Python would raise)."""
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        raise TypeError(f"{cls_name}.__init__() got an unexpected keyword argument {unknown[0]!r}")
    return parse(mode, bias=bias is True, **options)


def repr_options(options, mode: str) -> dict:
    """The non-default options as repr shows them: name -> text (zoneout as one number
    when p_h == p_c or for the GRU, remove as a sorted set)."""
    shown = {k: repr(v) for k, v in options.non_defaults().items()}
    p_h, p_c = options.zoneout
    if "zoneout" in shown and (p_h == p_c or mode != "LSTM"):
        shown["zoneout"] = repr(p_h)
    if "remove" in shown:
        shown["remove"] = "{" + ", ".join(repr(p) for p in sorted(options.remove)) + "}"
    return shown
