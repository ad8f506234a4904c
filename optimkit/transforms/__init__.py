"""The primitives: one family of gradient transformations per module."""

from optimkit.transforms.adabelief import AdaBeliefState, scale_by_adabelief
from optimkit.transforms.adadelta import AdadeltaState, scale_by_adadelta
from optimkit.transforms.adam_mini import AdamMiniState, adam_mini_blocks, scale_by_adam_mini
from optimkit.transforms.adamax import AdamaxState, scale_by_adamax
from optimkit.transforms.adams import AdamSState, scale_by_adams
from optimkit.transforms.adan import AdanState, scale_by_adan
from optimkit.transforms.ademamix import (
    AdEMAMixState,
    SimplifiedAdEMAMixState,
    half_life_warmup,
    linear_warmup,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
)
from optimkit.transforms.adopt import (
    AdoptState,
    FirstStepGateState,
    add_decayed_weights_after_first_step,
    scale_by_adopt,
)
from optimkit.transforms.amsgrad import AmsgradState, scale_by_amsgrad
from optimkit.transforms.came import CAMEState, scale_by_came
from optimkit.transforms.cautious import cautious, cautious_mask
from optimkit.transforms.factored import (
    FactoredRMSState,
    RelativeStepState,
    scale_by_factored_rms,
    scale_by_relative_step_size,
)
from optimkit.transforms.galore import GaLoreState, galore
from optimkit.transforms.hessian import (
    SophiaState,
    gauss_newton_bartlett,
    hutchinson,
    scale_by_sophia,
)
from optimkit.transforms.lookahead import LookaheadState, lookahead
from optimkit.transforms.lr_free import (
    DAdaptAdamState,
    ProdigyState,
    scale_by_dadapt_adam,
    scale_by_prodigy,
)
from optimkit.transforms.mars import MarsState, scale_by_mars
from optimkit.transforms.moments import (
    AdaGradState,
    AdamState,
    MomentumState,
    RMSPropState,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_momentum,
    scale_by_rms,
)
from optimkit.transforms.muon import MuonState, newton_schulz, scale_by_muon
from optimkit.transforms.nesterov_adam import NadamState, scale_by_nadam
from optimkit.transforms.nonfinite import NonFiniteStepsError, SkipNonFiniteState, skip_nonfinite
from optimkit.transforms.novograd import NovogradState, scale_by_novograd
from optimkit.transforms.rectified import scale_by_radam
from optimkit.transforms.rprop import RpropState, scale_by_rprop
from optimkit.transforms.sam import SAMState, sam, sam_perturbation
from optimkit.transforms.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_eval_params,
)
from optimkit.transforms.sign_momentum import SignMomentumState, scale_by_sign_momentum
from optimkit.transforms.sign_sgd import SignumState, scale_by_signum
from optimkit.transforms.sm3 import SM3State, scale_by_sm3
from optimkit.transforms.trust_ratio import TrustRatioState, scale_by_lars, scale_by_trust_ratio
from optimkit.transforms.update_clipping import scale_by_stable_adam
from optimkit.transforms.weight_decay import weight_decay_mask
from optimkit.transforms.yogi import YogiState, scale_by_yogi
