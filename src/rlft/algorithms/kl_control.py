"""The adaptive KL coefficient (Ziegler et al. 2019, section 2.2), for every algorithm.

    e_t       = clip(KL_t / KL_target - 1, -0.2, 0.2)
    beta_t+1  = beta_t (1 + e_t * n / horizon)

KL_t is the batch's mean sequence KL(pi || pi_ref) in nats (the per-token k1 summed over each
completion), n the number of completions in the batch. The coefficient rises while the policy
drifts further than the target and falls while it stays closer, by at most 20% of n / horizon
per step; over ``horizon`` completions it can change by a factor of about e^0.2. This is the form
of Ziegler et al.'s code (lm-human-preferences) and TRL's ``AdaptiveKLController``: the paper's
K_beta is n / horizon. Plain floats: no torch needed.
"""

from __future__ import annotations


def adaptive_kl_coef(kl_coef: float, kl: float, *, target: float, horizon: float, n: int) -> float:
    """The next step's coefficient; ``target <= 0`` keeps the coefficient fixed."""
    if target <= 0:
        return kl_coef
    if horizon <= 0:
        raise ValueError(f"the KL horizon must be > 0, got {horizon}")
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n / horizon)
