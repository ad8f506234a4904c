"""The primitives: one family of gradient transformations per module."""

from optimkit.transforms.adam_mini import AdamMiniState, adam_mini_blocks, scale_by_adam_mini
from optimkit.transforms.adams import AdamSState, scale_by_adams
from optimkit.transforms.adan import AdanState, scale_by_adan
from optimkit.transforms.factored import (
    FactoredRMSState, RelativeStepState, scale_by_factored_rms, scale_by_relative_step_size)
from optimkit.transforms.hessian import (
    SophiaState, gauss_newton_bartlett, hutchinson, scale_by_sophia)
from optimkit.transforms.moments import (
    AdaGradState, AdamState, MomentumState, RMSPropState, scale_by_adagrad, scale_by_adam,
    scale_by_momentum, scale_by_rms)
from optimkit.transforms.lookahead import LookaheadState, lookahead
from optimkit.transforms.nonfinite import SkipNonFiniteState, skip_nonfinite
from optimkit.transforms.rectified import scale_by_radam
from optimkit.transforms.schedule_free import (
    ScheduleFreeState, schedule_free, schedule_free_eval_params)
from optimkit.transforms.sign_momentum import SignMomentumState, scale_by_sign_momentum
from optimkit.transforms.trust_ratio import TrustRatioState, scale_by_lars, scale_by_trust_ratio
from optimkit.transforms.update_clipping import scale_by_stable_adam
from optimkit.transforms.weight_decay import weight_decay_mask
from optimkit.transforms.muon import MuonState, newton_schulz, scale_by_muon
