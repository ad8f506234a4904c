"""The declaration layer: how every full optimizer in optimkit is made from its chain.

An optimizer is declared once, as a function whose signature is its public signature and whose
body is its chain:

    @optimizer(family="adaptive", reference="torch.optim.AdamW; optax.adamw", typical_lr=1e-3,
               optax="adamw")
    def adamw(learning_rate: ScalarOrSchedule = 1e-3, b1: float = 0.9, ..., mask: Mask = None,
              *, nesterov: bool = False, state_storage: StorageLike = "float32"):
      return optax.chain(scale_by_adam(b1, b2, eps, eps_root, nesterov=nesterov, ...),
                         optax.add_decayed_weights(weight_decay, mask),
                         optax.scale_by_learning_rate(learning_rate))

The contract, written once here for every optimizer:

1. Arguments. Calling `adamw(...)` binds the arguments to the signature (optax's positional
   order for every optimizer optax also has) and sorts each into one of:
     - a hyperparameter: an argument annotated as a number (`float`, `int`, `ScalarOrSchedule`)
       given a number. A Python number is owned by the state (`optimkit.set_hyperparams`
       changes it); a jax array (what `optax.inject_hyperparams` hands in) is owned by the
       caller and used as given; a callable, for an argument annotated `ScalarOrSchedule`, is a
       schedule of the step count. The body receives each as a jax array, possibly traced.
     - structural: an argument whose default is `structural(value)` decides the state's
       structure or the compiled program (`min_dim_size_to_factor`, `ns_steps`). The body
       receives a Python value; a traced array raises, saying to name it in optax's
       `static_args`. Because its default is not a number, `optax.inject_hyperparams` leaves it
       alone.
     - everything else (bools, strings, None, masks, estimators, trees) is passed as given.
2. Validation at construction. Every numeric argument has a range (by name in
   `optimkit._checks.KNOWN_RANGES`, or in the declaration's `ranges=`); None, a string or a value
   out of range raises ValueError naming the optimizer, the argument, the value and the range.
   The body is built once with the values given, so the primitives' own checks run now too.
3. What every optimizer's `init` and `update` do around the chain:
     - `init` rejects integer and boolean params (naming the leaf) and returns fresh buffers: no
       state leaf is the same array as another leaf or a param, so a step with
       `donate_argnums` never donates one buffer twice;
     - `update` checks at trace time that the gradient tree matches the params and that the
       state is this optimizer's (naming the first differing path), computes in at least
       float32 (float16 / bfloat16 gradients and params are upcast on the way in: `g * g` in
       float16 underflows and overflows), and returns updates in the gradients' dtypes;
     - under Explicit mesh axes the state is placed in its derived shardings
       (`optimkit.sharding.with_explicit_axes`).
4. Registration. The optimizer is added to `optimkit.registry` with its metadata.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import GradientTransformation, GradientTransformationExtraArgs  # see optimizer()

from optimkit import _checks, registry
from optimkit.hyperparams import inject, to_python
from optimkit.sharding import with_explicit_axes
from optimkit.state import storage

ScalarOrSchedule = Union[float, jax.Array, Callable[[jax.Array], jax.Array]]
Mask = Union[Any, Callable[[Any], Any], None]


class Structural:
  """The default of an argument that decides structure (see the module docstring)."""

  __slots__ = ("value",)

  def __init__(self, value: Any):
    self.value = value

  def __repr__(self) -> str:
    return repr(self.value)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, Structural) and other.value == self.value

  def __hash__(self) -> int:
    return hash(("Structural", self.value))


def structural(value: Any) -> Any:
  """Marks a default as structural: `ns_steps: int = structural(5)`."""
  return Structural(value)


def _annotation_text(parameter: inspect.Parameter) -> str:
  annotation = parameter.annotation
  return annotation if isinstance(annotation, str) else getattr(annotation, "__name__",
                                                                str(annotation))


def _is_numeric(parameter: inspect.Parameter) -> bool:
  """Whether the annotation says the argument is a number (or a schedule of one)."""
  text = _annotation_text(parameter).replace(" ", "")
  if text.startswith(("tuple", "Sequence")):
    return False
  words = set(text.replace("|", ",").replace("[", ",").replace("]", ",").split(","))
  return bool(words & {"float", "int", "ScalarOrSchedule", "Optional[float]", "Optional[int]"})


def _allows_none(parameter: inspect.Parameter) -> bool:
  return parameter.default is None or "None" in _annotation_text(parameter)


def _check_value(owner: str, name: str, value: Any, spec: Mapping[str, Any],
                 allows_none: bool) -> None:
  spec = dict(spec)
  integer = spec.pop("integer", False)
  if value is None:
    if allows_none:
      return
    raise ValueError(f"{owner}: {name} must be a number in {_checks.describe_range(**spec)}, "
                     f"got None")
  if callable(value):
    try:
      first = value(0)
    except Exception:  # a schedule that cannot run eagerly is checked by its own maker
      return
    _checks.check_range(owner, f"{name} (at step 0 of the schedule)", first, **spec)
    return
  if isinstance(value, bool) or isinstance(value, str):
    raise ValueError(f"{owner}: {name} must be a number in {_checks.describe_range(**spec)}, "
                     f"got {value!r}")
  _checks.check_range(owner, name, value, **spec)
  if integer and hasattr(value, "__float__") and not isinstance(value, jax.core.Tracer):
    number = float(np.asarray(value))
    if number != int(number):
      raise ValueError(f"{owner}: {name} must be an integer in "
                       f"{_checks.describe_range(**spec)}, got {value!r}")


def _structural_value(owner: str, name: str, value: Any) -> Any:
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
        f"{owner}: {name} decides the optimizer's state structure or compiled program and "
        f"cannot be a traced value; under optax.inject_hyperparams list it in static_args, e.g. "
        f"optax.inject_hyperparams(optimkit.{owner}, static_args=({name!r},))")
  return to_python(value)


def optimizer(
    *,
    family: str,
    reference: str,
    typical_lr: float,
    optax: str | None = None,
    optax_mode: Mapping[str, Any] | None = None,
    optax_differs: str = "",
    ranges: Mapping[str, Mapping[str, Any]] | None = None,
    needs: tuple[str, ...] = (),
    derive: Mapping[str, Callable[[dict], Any]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Declares a full optimizer from its chain (see the module docstring for the contract).

  Args:
    family: the registry family ("classic", "adaptive", ...).
    reference: the implementation(s) the parity tests compare against.
    typical_lr: a learning rate that works for a small transformer.
    optax: optax's name for it ("adamw", "contrib.muon"), if optax has it.
    optax_mode: arguments that reproduce optax's variant where optimkit follows the authors.
    optax_differs: why trajectories still differ from optax's under `optax_mode`, if they do.
    ranges: ranges of numeric arguments whose names are not in `_checks.KNOWN_RANGES`.
    needs: extra arguments `update` needs with the default construction.
    derive: structural choices made once from the values given at construction, by argument
      name: `{"one_pass": lambda args: ...}` replaces the argument's value with the result.
  """
  extra_ranges = dict(ranges or {})
  derived = dict(derive or {})

  # The argument `optax` shadows the module in here, hence the names imported from optax.
  def declare(body: Callable[..., GradientTransformation]) -> Callable[..., Any]:
    owner = body.__name__
    signature = inspect.signature(body)
    parameters = signature.parameters
    structural_names = tuple(name for name, p in parameters.items()
                             if isinstance(p.default, Structural))
    numeric = {name for name, p in parameters.items() if _is_numeric(p)}
    schedulable = {name for name, p in parameters.items()
                   if "Schedule" in _annotation_text(p)}
    checked = {}
    for name in sorted(numeric):
      if name == "learning_rate":
        checked[name] = dict(low=0.0)
      elif name in extra_ranges:
        checked[name] = dict(extra_ranges[name])
      elif name in _checks.KNOWN_RANGES:
        checked[name] = dict(_checks.KNOWN_RANGES[name])
      else:  # a declaration error, found when the module is imported
        raise TypeError(f"optimizer {owner}: numeric argument {name} has no range; add it to "
                        f"ranges= or to optimkit._checks.KNOWN_RANGES")
    unknown = set(extra_ranges) - set(parameters)
    if unknown:
      raise TypeError(f"optimizer {owner}: ranges= names {sorted(unknown)}, which are not "
                      f"arguments")

    @functools.wraps(body)
    def make(*args: Any, **kwargs: Any) -> GradientTransformationExtraArgs:
      try:
        bound = signature.bind(*args, **kwargs)
      except TypeError as error:
        raise TypeError(f"{owner}: {error}") from None
      bound.apply_defaults()
      arguments = {name: value.value if isinstance(value, Structural) else value
                   for name, value in bound.arguments.items()}
      for name, spec in checked.items():
        _check_value(owner, name, arguments[name], spec, _allows_none(parameters[name]))
      if "state_storage" in arguments:
        try:
          storage.resolve(arguments["state_storage"])
        except ValueError as error:
          raise ValueError(f"{owner}: {error}") from None
      for name in structural_names:
        arguments[name] = _structural_value(owner, name, arguments[name])
      for name, rule in derived.items():
        arguments[name] = rule(arguments)

      owned, schedules, given, fixed = {}, {}, {}, {}
      for name, value in arguments.items():
        if name not in numeric or name in structural_names or value is None or \
            isinstance(value, (bool, str)):
          fixed[name] = value
        elif callable(value):
          if name not in schedulable:
            raise ValueError(f"{owner}: {name} cannot be a schedule (only arguments typed "
                             f"ScalarOrSchedule can), got {value!r}")
          schedules[name] = value
        elif isinstance(value, jax.Array):
          given[name] = value
        else:
          owned[name] = value

      def build(**hyperparams: Any) -> GradientTransformation:
        return body(**fixed, **hyperparams)

      # Built once now so that the primitives' own checks run at construction; a schedule is
      # checked through its value at step 0.
      try:
        build(**owned, **given, **{name: fn(0) for name, fn in schedules.items()})
      except ValueError as error:
        raise ValueError(f"{owner}: {error}") from None
      return with_explicit_axes(_checked(owner, inject(owner, build, owned, schedules, given),
                                        caller_arrays=tuple(given.values())))

    registry.register(registry.OptimizerInfo(
        name=owner, make=make, family=family, reference=reference, typical_lr=typical_lr,
        optax=optax, optax_mode=dict(optax_mode or {}), optax_differs=optax_differs,
        ranges=checked, structural=structural_names, needs=needs))
    return make

  return declare


def shortcut(base: Callable[..., Any], name: str, doc: str, **fixed: Any) -> Callable[..., Any]:
  """`base` with some arguments fixed by the name (`adamw_8bit` = adamw, state_storage="8bit").

  Its signature is `base`'s without the fixed arguments, so `optax.inject_hyperparams` and
  positional calls see exactly what can be passed.
  """
  base_signature = inspect.signature(base)
  signature = base_signature.replace(parameters=[
      p for p in base_signature.parameters.values() if p.name not in fixed])

  def make(*args: Any, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    try:
      bound = signature.bind(*args, **kwargs)
    except TypeError as error:
      fixed_names = ", ".join(f"{k}={v!r}" for k, v in fixed.items())
      raise TypeError(f"{name}: {error} ({name} fixes {fixed_names}; for another value call "
                      f"{base.__name__} directly)") from None
    return base(**bound.arguments, **fixed)

  make.__name__ = make.__qualname__ = name
  make.__doc__ = doc
  make.__signature__ = signature  # type: ignore[attr-defined]
  make.__module__ = base.__module__
  info = registry.OPTIMIZERS[base.__name__]
  registry.register(registry.OptimizerInfo(
      name=name, make=make, family=info.family, reference=info.reference,
      typical_lr=info.typical_lr, ranges={k: v for k, v in info.ranges.items() if k not in fixed},
      structural=tuple(k for k in info.structural if k not in fixed), needs=info.needs,
      shortcut_of=base.__name__))
  return make


def mu_storage_of(owner: str, mu_dtype: Any) -> storage.StorageLike | None:
  """The `mu_storage=` of a primitive whose first moment may be stored apart from the rest:
  optax's `mu_dtype` as a storage format, or None (the first moment follows `state_storage`)."""
  return None if mu_dtype is None else storage_of(owner, "mu_dtype", mu_dtype, "float32")


def storage_of(owner: str, name: str, dtype: Any, state_storage: storage.StorageLike
               ) -> storage.StorageLike:
  """The storage format an optax dtype argument asks for (`mu_dtype`, `accumulator_dtype`,
  `dtype_momentum`, `state_dtype`): None keeps `state_storage`; bfloat16 is optimkit's bfloat16
  format (stochastic rounding, where optax rounds to nearest); float32 and float64 are exact."""
  if dtype is None:
    return state_storage
  try:
    dtype = jnp.dtype(dtype)
  except TypeError:
    raise ValueError(f"{owner}: {name} must be a dtype or None, got {dtype!r}") from None
  if dtype == jnp.bfloat16:
    wanted = "bfloat16"
  elif dtype in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
    wanted = "float32"
  else:
    raise ValueError(f"{owner}: {name}={dtype.name} is not a storage optimkit has; use bfloat16 "
                     f"or float32, or state_storage= one of {sorted(storage.FORMATS)}")
  if state_storage != "float32" and state_storage != wanted:
    raise ValueError(f"{owner}: {name}={dtype.name} and state_storage={state_storage!r} ask for "
                     f"two formats of the same buffer; give one of them")
  return wanted


# ----------------------------------------------------------------------------------------------
# What every optimizer does around its chain (item 3 of the contract).


def _upcast(tree: Any) -> Any:
  """float16 / bfloat16 leaves as float32; wider and non-float leaves unchanged (the tree itself
  when nothing needs casting, so a float32 step traces no per-leaf work here)."""
  leaves, treedef = jax.tree.flatten(tree)
  narrow = [_is_narrow_float(getattr(leaf, "dtype", None)) for leaf in leaves]
  if not any(narrow):
    return tree
  return jax.tree.unflatten(treedef, [leaf.astype(jnp.float32) if cast else leaf
                                      for leaf, cast in zip(leaves, narrow)])


def _like(new_updates: Any, updates: Any) -> Any:
  """`new_updates` in the dtypes of `updates` (a cast only where they differ)."""
  new_leaves, treedef = jax.tree.flatten(new_updates)
  # jaxlib's PyTreeDef stub lacks flatten_up_to (the method exists at run time).
  old_leaves = treedef.flatten_up_to(updates)  # type: ignore[attr-defined]
  return jax.tree.unflatten(treedef, [new if new.dtype == old.dtype else new.astype(old.dtype)
                                      for new, old in zip(new_leaves, old_leaves)])


@functools.lru_cache(maxsize=None)
def _is_narrow_float(dtype: Any) -> bool:
  """A floating dtype under 32 bits (decided once per dtype, not once per leaf)."""
  return dtype is not None and jnp.issubdtype(dtype, jnp.floating) and \
      jnp.finfo(dtype).bits < 32


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
  """A state leaf as `jax.eval_shape` would give it (only its shape is checked)."""
  dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
  return jax.ShapeDtypeStruct(np.shape(leaf), dtype)


def _buffer_key(leaf: Any) -> Any:
  try:
    return tuple(shard.data.unsafe_buffer_pointer() for shard in leaf.addressable_shards)
  except Exception:  # deleted, abstract, or a backend without pointers: identity will do
    return ("id", id(leaf))


def fresh_buffers(state: Any, params: Any, caller_arrays: Any = ()) -> Any:
  """`state` with every leaf that shares a buffer with an earlier leaf, a param or one of
  `caller_arrays` copied.

  Eager `init` can hand out one array twice (a constant filler for every leaf, a scalar
  hyperparameter also used as a state value: `jnp.full((), value)` is `value` itself, and
  `optax.inject_hyperparams` keeps that value in its own state); `jax.jit(step,
  donate_argnums=...)` then fails with "donate the same buffer twice" or, on a mesh, worse."""
  seen = {_buffer_key(leaf) for leaf in jax.tree.leaves((params, caller_arrays))
          if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)}

  def fresh(leaf):
    if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
      return leaf
    key = _buffer_key(leaf)
    if key in seen:
      return jnp.array(leaf, copy=True)
    seen.add(key)
    return leaf

  return jax.tree.map(fresh, state)


def _checked(owner: str, transform: optax.GradientTransformation, caller_arrays: Any = ()
             ) -> optax.GradientTransformationExtraArgs:
  transform = optax.with_extra_args_support(transform)
  # The abstract init state, by parameter signature: what `update`'s state is checked against.
  # `init` records it as it runs (eagerly or under `jax.eval_shape`), so the check in a traced
  # `update` costs a flatten; only a state this transformation did not make (restored from a
  # checkpoint, or made by another instance) pays an abstract `init` to find it.
  expected_states: dict = {}

  def signature(like):
    leaves, treedef = jax.tree.flatten(like)
    return treedef, tuple((getattr(leaf, "shape", ()), getattr(leaf, "dtype", None))
                          for leaf in leaves)

  def init_fn(params):
    _checks.check_float_params(owner, params)
    state = transform.init(params)
    expected_states.setdefault(signature(params), jax.tree.map(_abstract, state))
    return fresh_buffers(state, params, caller_arrays)

  def expected_state(like):
    key = signature(like)
    if key not in expected_states:
      expected_states[key] = jax.eval_shape(transform.init, like)
    return expected_states[key]

  def update_fn(updates, state, params=None, **extra_args):
    _checks.check_trees_match(owner, updates, params)
    _checks.check_state_matches(owner, state,
                                expected_state(params if params is not None else updates))
    new_updates, state = transform.update(_upcast(updates), state, _upcast(params), **extra_args)
    return _like(new_updates, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
