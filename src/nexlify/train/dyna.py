"""Dyna-style imagined experience from the learned market model (``train.dyna_ratio`` > 0).

Every ``dyna_refit_every`` real transitions the :class:`~nexlify.train.world_model.WorldModel`
is refit on the replay buffer (the training market only: validation bars never enter replay):
the newest fifth of the buffer is held out and the model's error on it is logged beside
persistence (those transitions may revisit bars the fit saw in other episodes, so this is a fit
monitor, not an out-of-sample figure; ``benchmarks/world_model_error.py`` gives that one).

After each vector step, ``dyna_ratio`` imagined transitions per real one are made: a real
observation drawn from replay, a uniformly random action, the model's predicted next-bar market
features as the next observation and its predicted reward. **The account state is not
simulated**: the pair and account part of the observation (position flags, unrealised PnL, cash
share, ...) is carried forward unchanged, an approximation (a buy does not show as a position in
the imagined next observation). Imagined transitions are one-step, never terminal, and live in
their own buffer: the real buffer, n-step returns, resume points and SWA never see them. The
learner draws each batch uniformly from the union of both buffers; imagined samples carry the
flat index -1, so prioritized replay never updates a priority from them.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from nexlify.agent.replay import ReplayBatch, ReplayBuffer, Sampler
from nexlify.train.world_model import MarketLayout, WorldModel, prediction_error

HELD_OUT = 0.2
"""Share of the replay buffer (its newest rows) held out from each fit to score it."""
MIN_ROWS = 5
"""Fewest replay rows a fit waits for (one held out, the rest to fit on)."""
IMAGINED = -1
"""Flat index that marks an imagined sample in a mixed batch."""


class DynaPlanner:
    """The world model, its imagined replay, and the mixed sampling the learner uses."""

    def __init__(
        self,
        real: ReplayBuffer,
        layout: MarketLayout,
        n_actions: int,
        *,
        ratio: float,
        refit_every: int,
        seed: int,
        log: logging.Logger,
        label: str,
    ) -> None:
        self.real = real
        self.ratio = ratio
        self.refit_every = refit_every
        self.log = log
        self.label = label
        self.model = WorldModel(real.obs_dim, n_actions, layout, seed=seed)
        self.n_actions = n_actions
        self.imagined = ReplayBuffer(
            max(1, math.ceil(real.capacity_per_env * ratio)), real.n_envs, real.obs_dim,
            gamma=real.gamma, device=real.device, n_step=1, reward_scale=real.reward_scale,
        )  # fmt: skip
        self.rng = np.random.default_rng([seed, 53])
        """Imagination and imagined sampling only: the run's own generator is left as it is."""
        self.next_refit = refit_every
        self.owed = 0.0
        """Imagined transitions due but not made yet (made in chunks of n_envs)."""
        self.made = 0

    # ---- imagination ------------------------------------------------------------------------
    def after_collect(self, transitions: int, episode: int) -> dict[str, float] | None:
        """Refit when due (returns the fit's history entry), then make the imagined
        transitions owed for the real ones collected."""
        entry = None
        if transitions >= self.next_refit and self.real.filled_rows >= MIN_ROWS:
            entry = self.refit(episode)
            self.next_refit = transitions + self.refit_every
        if self.model.fitted:
            self.owed += self.ratio * self.real.n_envs
            while self.owed >= self.real.n_envs:
                self.imagine()
                self.owed -= self.real.n_envs
        return entry

    def refit(self, episode: int) -> dict[str, float]:
        """Fit the model on the older replay rows, score it on the newest; the history entry."""
        buf = self.real
        filled = buf.filled_rows
        newest_first = (buf.pos - 1 - np.arange(filled)) % buf.capacity_per_env
        held = max(1, int(filled * HELD_OUT))
        fit_rows, test_rows = newest_first[held:], newest_first[:held]
        loss = self.model.fit(*self._transitions(fit_rows))
        error = prediction_error(self.model, *self._transitions(test_rows))
        self.log.info(
            "%s | world model fit %d on %d transitions (loss %.3f) | held-out MSE features %.4g "
            "(persistence %.4g, mean %.4g) reward %.3g (persistence %.3g)", self.label,
            self.model.fits, len(fit_rows) * buf.n_envs, loss, error.feature_mse,
            error.feature_mse_persistence, error.feature_mse_mean, error.reward_mse,
            error.reward_mse_persistence,
        )  # fmt: skip
        return {"episode": float(episode), "world_model": float(self.model.fits),
                "wm_fit_loss": loss, "wm_imagined_so_far": float(self.made),
                **{f"wm_{k}": v for k, v in error.as_dict().items()}}  # fmt: skip

    def _transitions(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        b = self.real
        return (b.obs[rows].reshape(-1, b.obs_dim), b.actions[rows].reshape(-1),
                b.next_obs[rows].reshape(-1, b.obs_dim), b.rewards[rows].reshape(-1))  # fmt: skip

    def imagine(self) -> None:
        """One chunk of n_envs imagined transitions into the imagined buffer."""
        b = self.real
        idx = self.rng.integers(0, len(b), size=b.n_envs)
        obs = b.obs.reshape(-1, b.obs_dim)[idx]
        actions = self.rng.integers(0, self.n_actions, size=b.n_envs)
        pred = self.model.predict(obs, actions)
        next_obs = self.model.layout.next_obs(obs, pred.features_BK)
        never = np.zeros(b.n_envs, dtype=bool)
        self.imagined.add(obs, actions, pred.reward_B, next_obs, never, never)
        self.made += b.n_envs

    # ---- what the learner samples from -------------------------------------------------------
    @property
    def sampler(self) -> Sampler:
        """The real buffer's sampler (prioritized replay anneals its beta through it)."""
        return self.real.sampler

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplayBatch:
        """A batch drawn from real and imagined replay in proportion to what each holds."""
        n_real, n_imagined = len(self.real), len(self.imagined) if self.model.fitted else 0
        k = min(round(batch_size * n_imagined / (n_real + n_imagined)), batch_size - 1)
        real = self.real.sample(batch_size - k, rng)
        if k == 0:
            return real
        dream = self.imagined.sample(k, self.rng)
        weights = real.weights_B
        if weights is not None:  # imagined samples were drawn uniformly: full weight
            weights = torch.cat([weights, torch.ones_like(dream.rewards_B)])
        return ReplayBatch(
            obs_BD=torch.cat([real.obs_BD, dream.obs_BD]),
            actions_B=torch.cat([real.actions_B, dream.actions_B]),
            rewards_B=torch.cat([real.rewards_B, dream.rewards_B]),
            next_obs_BD=torch.cat([real.next_obs_BD, dream.next_obs_BD]),
            terminated_B=torch.cat([real.terminated_B, dream.terminated_B]),
            discounts_B=torch.cat([real.discounts_B, dream.discounts_B]),
            indices=np.concatenate([real.indices, np.full(k, IMAGINED, dtype=np.int64)]),
            weights_B=weights,
        )

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """New priorities for the real samples only."""
        real = indices != IMAGINED
        self.real.update_priorities(indices[real], td_errors[real])
