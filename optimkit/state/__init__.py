"""Storage of optimizer state: float32, bfloat16 with stochastic rounding, 8-bit and 4-bit
moments, and low-precision parameters that still train like float32."""

from optimkit.state.low_precision_params import CompensatedState, compensated_updates
from optimkit.state.storage import (
    FORMATS,
    BFloat16Storage,
    Blockwise8BitStorage,
    Float32Storage,
    FourBitStorage,
    StateStorage,
    StorageLike,
    resolve,
)
