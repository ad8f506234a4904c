"""optimkit: composable, reference-exact gradient transformations for JAX.

Every name here is an optax `GradientTransformation` (or a helper around one): use it in
`optax.chain`, `flax.nnx.Optimizer(model, tx, wrt=nnx.Param)` or a Flax Linen `TrainState`.
"""

from optimkit._checks import TreeMismatchError
from optimkit.comparison import compare
from optimkit.hyperparams import get_hyperparams, set_hyperparams
from optimkit.optimizers import (
    adafactor, adagrad, adam, adam_mini, adams, adamw, adamw_4bit, adamw_8bit, adan, lamb, lars,
    lion, lion_8bit, radam, ranger, rmsprop, schedule_free_adamw, schedule_free_sgd, sgd, sophia,
    stable_adamw)
# The Adam family, the sign methods, Rprop, Adadelta and SM3 (issue 18).
from optimkit.optimizers import (
    adabelief, adadelta, adamax, adamaxw, amsgrad, nadam, nadamw, novograd, rprop, sign_sgd,
    signum, sm3, yogi)
from optimkit.optimizers import (  # ADOPT, AdEMAMix, MARS, CAME (issue 18)
    ademamix, adopt, came, mars, simplified_ademamix)
from optimkit.optimizers import dadapt_adamw, prodigy  # learning-rate-free (issue 18)
from optimkit.state import StateStorage, compensated_updates
from optimkit.transforms import (
    AdaGradState, AdamMiniState, DAdaptAdamState, GaLoreState, NonFiniteStepsError, ProdigyState,
    galore,
    scale_by_dadapt_adam, scale_by_prodigy, AdamSState, AdanState, LookaheadState, adam_mini_blocks,
    lookahead, scale_by_adam_mini, scale_by_adams, scale_by_adan, scale_by_radam,
    scale_by_lars, scale_by_stable_adam, AdamState, FactoredRMSState, MomentumState, RelativeStepState, RMSPropState,
    ScheduleFreeState, SignMomentumState, SkipNonFiniteState, SophiaState, TrustRatioState,
    gauss_newton_bartlett, hutchinson, scale_by_adagrad, scale_by_adam, scale_by_factored_rms,
    scale_by_momentum, scale_by_relative_step_size, scale_by_rms, scale_by_sign_momentum,
    scale_by_sophia, scale_by_trust_ratio, schedule_free, schedule_free_eval_params,
    skip_nonfinite, weight_decay_mask)
from optimkit.transforms import (
    AdaBeliefState, AdadeltaState, AdamaxState, AmsgradState, NadamState, NovogradState,
    RpropState, SignumState, SM3State, YogiState, scale_by_adabelief, scale_by_adadelta,
    scale_by_adamax, scale_by_amsgrad, scale_by_nadam, scale_by_novograd, scale_by_rprop,
    scale_by_signum, scale_by_sm3, scale_by_yogi)
from optimkit.transforms import (  # ADOPT, AdEMAMix, MARS, CAME, cautious, SAM (issue 18)
    AdEMAMixState, AdoptState, CAMEState, FirstStepGateState, MarsState, SAMState,
    SimplifiedAdEMAMixState, add_decayed_weights_after_first_step, cautious, cautious_mask,
    half_life_warmup, linear_warmup, sam, sam_perturbation, scale_by_ademamix, scale_by_adopt,
    scale_by_came, scale_by_mars, scale_by_simplified_ademamix)
from optimkit import checkpoint, memory, presets, registry, schedules, sharding
from optimkit import flax  # optimkit.flax: Flax NNX helpers (the flax package is unaffected)
from optimkit.schedules import plot_schedule
from optimkit.matrix_work import map_matrices
from optimkit.optimizers.matrix import muon
from optimkit.transforms.muon import MuonState, muon_labels, scale_by_muon
# Kronecker-factored preconditioners: Shampoo, SOAP, PSGD Kron (issue 17).
from optimkit.optimizers.kronecker import kron, shampoo, soap
from optimkit.transforms.kron import KronState, precond_update_prob_schedule, scale_by_kron
from optimkit.transforms.shampoo import ShampooState, scale_by_shampoo
from optimkit.transforms.soap import SOAPState, scale_by_soap

__version__ = "0.2.0"
