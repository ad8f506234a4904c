"""Full optimizers, one declaration each (see `optimkit.optimizers._declare`), by family.

Importing this package declares every optimizer, which fills `optimkit.registry`.
"""

from optimkit.optimizers.adagrad_variants import adadelta, sm3
from optimkit.optimizers.adam_variants import (
    adabelief,
    adamax,
    adamaxw,
    amsgrad,
    nadam,
    nadamw,
    novograd,
    yogi,
)
from optimkit.optimizers.adaptive import (
    adam,
    adam_mini,
    adam_mini_4bit,
    adams,
    adamw,
    adamw_4bit,
    adamw_8bit,
    adan,
    radam,
    ranger,
    stable_adamw,
)
from optimkit.optimizers.classic import adagrad, rmsprop, sgd
from optimkit.optimizers.factored import adafactor
from optimkit.optimizers.kronecker import kron, shampoo, soap
from optimkit.optimizers.lr_free import dadapt_adamw, prodigy
from optimkit.optimizers.matrix import muon
from optimkit.optimizers.modern import ademamix, adopt, came, mars, simplified_ademamix
from optimkit.optimizers.schedule_free import schedule_free_adamw, schedule_free_sgd
from optimkit.optimizers.sign import lion, lion_8bit
from optimkit.optimizers.sign_and_step import rprop, sign_sgd, signum
from optimkit.optimizers.sophia import sophia
from optimkit.optimizers.trust_ratio import lamb, lars
from optimkit.optimizers.wrapped import cautious_adamw, cautious_lion, galore_adamw
