"""A learned market model: an ensemble of small MLPs that predicts the next bar from this one.

From an observation and the action taken (one-hot) each member predicts the change of every
pair's market features from the current bar to the next, and the step's reward. Members train on
their own bootstrap resample of the transitions (so their spread, the *disagreement*, says where
the model knows little). Inputs and targets are standardised with the training transitions'
statistics; the loss weighs the feature block and the reward equally.

It is meant for training data only (the replay buffer, or transitions collected on the training
market): :func:`prediction_error` scores it on held-out transitions next to *persistence*
(next features = current features, reward = 0), the baseline a market model has to beat. Markets
are close to random walks, so for price-like features persistence is hard to beat; for
return-like features (close to independent from bar to bar) predicting the average beats it
easily, which is why the training average is reported too.

Determinism: weights, bootstrap draws and minibatches come from ``np.random.default_rng(seed)``;
no global random state is read or changed.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch

from nexlify.errors import ConfigError, TrainingError


@dataclass(frozen=True)
class MarketLayout:
    """Where the market features sit in an env observation (see ``VecMarketEnv``).

    The first ``obs_window * n_pairs * n_features`` values are the features of the last
    ``obs_window`` bars, oldest bar first, each bar ``[P, F]`` flattened; everything after them
    (pair and account state, strategy books) is the *account part*.
    """

    obs_window: int
    n_pairs: int
    n_features: int

    @property
    def bar_size(self) -> int:
        """Features of one bar over all pairs (P * F)."""
        return self.n_pairs * self.n_features

    @property
    def market_size(self) -> int:
        """The market part of an observation (W * P * F)."""
        return self.obs_window * self.bar_size

    def current_features(self, obs_BD: np.ndarray) -> np.ndarray:
        """The newest bar's features [B, P * F] of observations [B, D]."""
        return obs_BD[:, self.market_size - self.bar_size : self.market_size]

    def next_obs(self, obs_BD: np.ndarray, features_BK: np.ndarray) -> np.ndarray:
        """Observations one bar on: the window shifted by one bar with ``features_BK`` as its
        newest bar; the account part is copied unchanged (it is not simulated)."""
        out = obs_BD.copy()
        m, k = self.market_size, self.bar_size
        out[:, : m - k] = obs_BD[:, k:m]
        out[:, m - k : m] = features_BK
        return out


class Prediction(NamedTuple):
    """The ensemble's mean prediction and how much its members disagree."""

    features_BK: np.ndarray
    """Mean predicted next-bar features, float32 [B, P * F]."""
    reward_B: np.ndarray
    """Mean predicted reward, float32 [B]."""
    disagreement_B: np.ndarray
    """Std over members of the standardised outputs, averaged over outputs, float32 [B]."""


@dataclass(frozen=True)
class WorldModelConfig:
    """Size and training budget of the ensemble."""

    members: int = 5
    """Networks in the ensemble, each on its own bootstrap resample."""
    hidden: int = 64
    """Units per hidden layer."""
    layers: int = 2
    """Hidden layers."""
    epochs: float = 20.0
    """Passes over the data per fit, bounded by min_steps and max_steps gradient steps."""
    min_steps: int = 200
    max_steps: int = 3000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("members", "hidden", "layers", "min_steps", "max_steps", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"world_model.{name}: {v!r} is invalid (an integer >= 1)")
        if self.min_steps > self.max_steps:
            raise ConfigError(f"world_model.min_steps: {self.min_steps} is above max_steps")
        for name in ("epochs", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"world_model.{name}: {getattr(self, name)!r} must be > 0")


class _EnsembleMLP(torch.nn.Module):
    """E independent MLPs evaluated in one batched matmul per layer ([E, B, in] -> [E, B, out])."""

    def __init__(self, sizes: list[int], members: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for n_in, n_out in itertools.pairwise(sizes):
            bound = 1.0 / np.sqrt(n_in)  # torch's default Linear init, drawn from our generator
            w = rng.uniform(-bound, bound, size=(members, n_in, n_out)).astype(np.float32)
            b = rng.uniform(-bound, bound, size=(members, 1, n_out)).astype(np.float32)
            self.weights.append(torch.nn.Parameter(torch.from_numpy(w)))
            self.biases.append(torch.nn.Parameter(torch.from_numpy(b)))

    def forward(self, x_EBI: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x_EBI = torch.baddbmm(b, x_EBI, w)
            if i < last:
                x_EBI = torch.relu(x_EBI)
        return x_EBI


@dataclass
class _Scaling:
    """Standardisation fitted on the training transitions (std floored: constant columns)."""

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    next_feature_mean: np.ndarray
    """Average next-bar features of the training transitions (the 'mean' baseline)."""


def _std(a: np.ndarray) -> np.ndarray:
    s = a.std(axis=0)
    return np.where(s > 1e-8, s, 1.0).astype(np.float32)


class WorldModel:
    """Ensemble market model; see the module docstring."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        layout: MarketLayout,
        config: WorldModelConfig | None = None,
        seed: int = 0,
    ) -> None:
        if layout.market_size > obs_dim:
            raise ConfigError(
                f"world model: the layout's market part ({layout.market_size} values) is longer "
                f"than the observation ({obs_dim})"
            )
        self.obs_dim = obs_dim
        self.n_actions = n_actions
        self.layout = layout
        self.config = config or WorldModelConfig()
        self.seed = seed
        self.fits = 0
        self._net: _EnsembleMLP | None = None
        self._scaling: _Scaling | None = None

    @property
    def fitted(self) -> bool:
        return self._net is not None

    def _inputs(self, obs_BD: np.ndarray, actions_B: np.ndarray) -> np.ndarray:
        self._check(obs_BD, actions_B)
        onehot = np.zeros((len(actions_B), self.n_actions), dtype=np.float32)
        onehot[np.arange(len(actions_B)), actions_B] = 1.0
        return np.concatenate([obs_BD.astype(np.float32), onehot], axis=1)

    def _check(self, obs_BD: np.ndarray, actions_B: np.ndarray) -> None:
        if obs_BD.ndim != 2 or obs_BD.shape[1] != self.obs_dim:
            raise TrainingError(f"world model: observations {obs_BD.shape}, expected [B, "
                                f"{self.obs_dim}]")  # fmt: skip
        if actions_B.shape != (obs_BD.shape[0],):
            raise TrainingError(f"world model: actions {actions_B.shape} for {obs_BD.shape[0]} "
                                "observations")  # fmt: skip
        if len(actions_B) and (actions_B.min() < 0 or actions_B.max() >= self.n_actions):
            raise TrainingError(f"world model: actions outside 0..{self.n_actions - 1}")

    def fit(
        self,
        obs_BD: np.ndarray,
        actions_B: np.ndarray,
        next_obs_BD: np.ndarray,
        rewards_B: np.ndarray,
    ) -> float:
        """Train a fresh ensemble on these transitions; the final training loss (standardised).

        Each fit starts from new weights drawn from ``(seed, fit count)``: same seed and same
        transitions, same model.
        """
        n = obs_BD.shape[0]
        if n < 2 or next_obs_BD.shape != obs_BD.shape or rewards_B.shape != (n,):
            raise TrainingError(
                f"world model: fit needs >= 2 transitions with obs {obs_BD.shape}, next_obs "
                f"{next_obs_BD.shape} and rewards {rewards_B.shape} of the same length"
            )
        x = self._inputs(obs_BD, actions_B)
        current = self.layout.current_features(obs_BD)
        next_features = self.layout.current_features(next_obs_BD)
        y = np.concatenate([next_features - current, rewards_B[:, None]], axis=1).astype(np.float32)
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise TrainingError("world model: non-finite values in the training transitions")
        self._scaling = _Scaling(x.mean(0), _std(x), y.mean(0), _std(y),
                                 next_features.mean(0).astype(np.float32))  # fmt: skip
        rng = np.random.default_rng([self.seed, self.fits])
        self.fits += 1
        cfg = self.config
        sizes = [x.shape[1]] + [cfg.hidden] * cfg.layers + [y.shape[1]]
        net = _EnsembleMLP(sizes, cfg.members, rng)
        loss = self._train(net, self._scale_x(x), (y - self._scaling.y_mean) / self._scaling.y_std,
                           rng)  # fmt: skip
        self._net = net
        return loss

    def _train(self, net: _EnsembleMLP, x: np.ndarray, y: np.ndarray,
               rng: np.random.Generator) -> float:  # fmt: skip
        cfg = self.config
        n, E = x.shape[0], cfg.members
        steps = int(np.clip(np.ceil(cfg.epochs * n / cfg.batch_size), cfg.min_steps, cfg.max_steps))
        boot_EN = rng.integers(0, n, size=(E, n))  # each member's bootstrap resample
        x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
        k = y.shape[1] - 1  # feature outputs; the last column is the reward
        optim = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate,
                                 weight_decay=cfg.weight_decay)  # fmt: skip
        batch = min(cfg.batch_size, n)
        loss = torch.zeros(())
        for _ in range(steps):
            pick_EB = np.take_along_axis(boot_EN, rng.integers(0, n, size=(E, batch)), axis=1)
            idx = torch.from_numpy(pick_EB)
            err_EBO = (net(x_t[idx]) - y_t[idx]) ** 2
            loss = err_EBO[..., :k].mean() + err_EBO[..., k].mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
        return float(loss.detach())

    def _scale_x(self, x: np.ndarray) -> np.ndarray:
        assert self._scaling is not None
        s = self._scaling
        out = (x - s.x_mean) / s.x_std
        return out.astype(np.float32)

    def predict(self, obs_BD: np.ndarray, actions_B: np.ndarray) -> Prediction:
        """Mean next-bar features, mean reward and the members' disagreement."""
        if self._net is None or self._scaling is None:
            raise TrainingError("world model: predict before fit")
        x = torch.from_numpy(self._scale_x(self._inputs(obs_BD, actions_B)))
        with torch.no_grad():
            out_EBO = self._net(x.expand(self.config.members, -1, -1)).numpy()
        s = self._scaling
        disagreement = out_EBO.std(axis=0).mean(axis=1) if self.config.members > 1 else None
        y_BO = out_EBO.mean(axis=0) * s.y_std + s.y_mean
        features = self.layout.current_features(obs_BD) + y_BO[:, :-1]
        return Prediction(
            features.astype(np.float32),
            y_BO[:, -1].astype(np.float32),
            (disagreement if disagreement is not None else np.zeros(len(x))).astype(np.float32),
        )

    @property
    def next_feature_mean(self) -> np.ndarray:
        """The training transitions' average next-bar features [P * F]."""
        if self._scaling is None:
            raise TrainingError("world model: not fitted")
        return self._scaling.next_feature_mean


@dataclass(frozen=True)
class PredictionError:
    """Mean squared errors on held-out transitions: the model beside its baselines."""

    transitions: int
    feature_mse: float
    """Model, next-bar features (mean over features and transitions)."""
    feature_mse_persistence: float
    """Persistence: the next bar's features equal the current bar's."""
    feature_mse_mean: float
    """The training transitions' average next-bar features, whatever the bar."""
    reward_mse: float
    """Model, reward."""
    reward_mse_persistence: float
    """Persistence for the reward: 0 (no change in equity)."""
    disagreement: float
    """Mean ensemble disagreement on these transitions."""

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def prediction_error(
    model: WorldModel,
    obs_BD: np.ndarray,
    actions_B: np.ndarray,
    next_obs_BD: np.ndarray,
    rewards_B: np.ndarray,
) -> PredictionError:
    """Score ``model`` on held-out transitions (bars it did not train on) beside persistence."""
    if obs_BD.shape[0] == 0:
        raise TrainingError("world model: no held-out transitions to score")
    pred = model.predict(obs_BD, actions_B)
    layout = model.layout
    actual = layout.current_features(next_obs_BD).astype(np.float64)
    current = layout.current_features(obs_BD).astype(np.float64)
    rewards = rewards_B.astype(np.float64)
    return PredictionError(
        transitions=int(obs_BD.shape[0]),
        feature_mse=float(np.mean((pred.features_BK - actual) ** 2)),
        feature_mse_persistence=float(np.mean((current - actual) ** 2)),
        feature_mse_mean=float(np.mean((model.next_feature_mean - actual) ** 2)),
        reward_mse=float(np.mean((pred.reward_B - rewards) ** 2)),
        reward_mse_persistence=float(np.mean(rewards**2)),
        disagreement=float(np.mean(pred.disagreement_B)),
    )
