"""DQN agent for batched envs: the policy (act), the learner (update) and its checkpoints.

The TD targets and losses live in :mod:`nexlify.agent.losses`; replay in
:mod:`nexlify.agent.replay`. ``agent.cpu_kernels`` picks, once, the plain-torch reference or the
compiled CPU fast path for the distributional heads (:mod:`nexlify.agent.fast_path`). Which
Rainbow parts are on is read from :class:`AgentConfig`, never from subclasses. Torch thread
counts are the trainer's business and are not set here.

Noise, dropout and normalisation: learning runs the online network in train mode with fresh
noisy-layer noise per gradient step; acting (:meth:`DQNAgent.act`) uses the current noise with
dropout off; :meth:`DQNAgent.greedy` and :meth:`DQNAgent.q_values` use the mean weights, so
validation is deterministic. Noise and dropout masks come from the agent's own ``torch.Generator``.

Stats and GPU syncs: :meth:`DQNAgent.update_no_sync` returns the step's stats as one detached
tensor on the learner's device and never waits for the device; :meth:`DQNAgent.update` converts
that tensor to Python floats (one ``tolist()``, which syncs on a GPU and is free on the CPU).
A GPU training loop calls ``update_no_sync`` and converts only the steps it logs.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import nexlify
from nexlify.agent.config import PLAIN_DQN, AgentConfig
from nexlify.agent.fast_path import learner_kernels
from nexlify.agent.losses import DQNLoss, dqn_loss, quantile_huber_taken_loss, td_target
from nexlify.agent.networks import QNetwork, build_q_network
from nexlify.agent.noisy import reset_noise_of
from nexlify.agent.replay import ReplayBatch
from nexlify.agent.schedules import LRSchedule
from nexlify.errors import CheckpointError, ConfigError
from nexlify.io import atomic_write
from nexlify.system.devices import denormals_flushed

UPDATE_STATS = ("loss", "q_mean", "td_abs_mean", "grad_norm")
"""Names of the entries of the stats vector :meth:`DQNAgent.update_no_sync` returns, in order."""

CHECKPOINT_FORMAT = "nexlify-dqn"
CHECKPOINT_FORMAT_VERSION = 2
"""2: Rainbow switches in agent_config (a format-1 file is a plain DQN: see PLAIN_DQN)."""
_REQUIRED_KEYS = (
    "format",
    "format_version",
    "model_state_dict",
    "target_state_dict",
    "optimizer_state_dict",
    "agent_config",
    "obs_dim",
    "n_actions",
)


def stats_to_dict(stats_4: torch.Tensor) -> dict[str, float]:
    """Python floats keyed by :data:`UPDATE_STATS` (syncs once when the tensor is on a GPU)."""
    return dict(zip(UPDATE_STATS, stats_4.tolist(), strict=True))


def hold_unless_clear(q_NA: torch.Tensor, chosen_N: torch.Tensor, margin: float) -> np.ndarray:
    """``chosen_N`` where its Q-value beats hold's (action 0) by ``margin`` or more, else hold:
    a no-trade band against acting on a Q-gap smaller than the noise in it. int64 [N]."""
    gap_N = q_NA.gather(1, chosen_N.view(-1, 1)).view(-1) - q_NA[:, 0]
    out_N = torch.where(gap_N >= margin, chosen_N, torch.zeros_like(chosen_N))
    return out_N.numpy().astype(np.int64, copy=False)


class DQNAgent:
    """Online and target Q-networks, Adam, epsilon-greedy acting and the DQN update."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        config: AgentConfig,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        self.obs_dim = obs_dim
        self.n_actions = n_actions
        self.config = config
        self.device = torch.device(device)
        self.seed = seed
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                f"agent.amp: 'fp16' needs a CUDA device (this agent is on {self.device}); "
                "use 'bf16' or 'off'"
            )
        self.online: QNetwork = build_q_network(obs_dim, n_actions, config, seed).to(self.device)
        self.target: QNetwork = copy.deepcopy(self.online)
        self.target.requires_grad_(False)
        self.target.eval()
        self.noise_generator = torch.Generator(device=self.device)
        """Source of noisy-layer noise and dropout masks (seeded from ``seed``; independent of
        the global RNG; saved in checkpoints)."""
        self.noise_generator.manual_seed(_derived_seed(seed, 11))
        self.online.set_dropout_generator(self.noise_generator)
        self._noisy = bool(self.online.noisy_layers)
        self._modal = config.dropout > 0 or config.norm == "batch"
        self.reset_noise()
        self.optimizer = _make_adam(self.online, config)
        self.lr_schedule = LRSchedule(self.optimizer, config)
        self._amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        self.grad_scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        """fp16's loss scaler (None otherwise); its scale and growth count are in resume points."""
        self.n_updates = 0
        """Gradient steps taken so far (drives hard target updates)."""
        self.last_td_error_B: torch.Tensor | None = None
        """Detached TD errors of the last update (for prioritized replay)."""
        self._online_params = list(self.online.parameters())
        self._target_params = list(self.target.parameters())
        self.kernels = learner_kernels(config.cpu_kernels, self.device)
        """Greedy actions, taken-action outputs and C51 losses: compiled or plain torch."""

    # ----------------------------------------------------------------- policy

    def act(self, obs_ND: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy int64 actions [N] for a batch of observations [N, D].

        Draws the explore mask and the random actions from ``rng`` for every call whatever
        ``epsilon`` is, so the generator's stream does not depend on the schedule. One network
        forward for the whole batch (skipped when every env explores).
        """
        n = int(obs_ND.shape[0])
        explore_N = rng.random(n) < epsilon
        random_N = rng.integers(0, self.n_actions, size=n, dtype=np.int64)
        if explore_N.all():
            return random_N
        return np.where(explore_N, random_N, self._argmax(obs_ND, noise=self._noisy))

    def greedy(self, obs_ND: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a) as int64 [N] (first action on ties), noise-free mean weights; hold
        (0) where that action beats hold by less than ``config.hold_margin``."""
        if self.config.hold_margin == 0.0:
            return self._argmax(obs_ND, noise=False)
        q_NA = self.q_values_tensor(obs_ND).cpu()
        return hold_unless_clear(q_NA, q_NA.argmax(dim=1), self.config.hold_margin)

    def _argmax(self, obs_ND: np.ndarray, noise: bool) -> np.ndarray:
        net = self._policy_net(noise)
        with torch.inference_mode():
            actions_N = self.kernels.greedy(net, self._obs_tensor(obs_ND))
        return actions_N.cpu().numpy().astype(np.int64, copy=False)

    def q_values(self, obs_ND: np.ndarray) -> np.ndarray:
        """Expected Q-values of the online network as float32 [N, A] (noise-free)."""
        return self.q_values_tensor(obs_ND, noise=False).cpu().numpy()

    def q_values_tensor(self, obs_ND: np.ndarray, noise: bool = False) -> torch.Tensor:
        """Expected Q-values [N, A] on the agent's device, in eval mode, with or without noise."""
        net = self._policy_net(noise)
        with torch.inference_mode():
            return net(self._obs_tensor(obs_ND)).float()

    def _policy_net(self, noise: bool) -> QNetwork:
        """The online network in eval mode, its noise on or off, for acting and evaluation."""
        net = self.online
        if self._modal:
            net.eval()
        if self._noisy:
            net.set_noise(noise)
        return net

    def reset_noise(self) -> None:
        """Fresh noise in the noisy layers of both networks (no-op without noisy layers)."""
        if self._noisy:  # one draw for both networks
            reset_noise_of(self.online.noisy_layers + self.target.noisy_layers,
                           self.noise_generator)  # fmt: skip

    def epsilon_at(self, progress: float, start: float | None = None) -> float:
        """Exploration epsilon at ``progress`` = transitions so far / total transitions of the run.

        Linear from ``start`` (default eps_start; retraining starts lower) at 0 to eps_end at
        eps_decay_fraction, then flat.
        """
        c = self.config
        if c.eps_decay_fraction <= 0.0:
            return c.eps_end
        first = c.eps_start if start is None else start
        frac = min(max(progress / c.eps_decay_fraction, 0.0), 1.0)
        return first + frac * (c.eps_end - first)

    def _obs_tensor(self, obs_ND: np.ndarray) -> torch.Tensor:
        if obs_ND.ndim != 2 or obs_ND.shape[1] != self.obs_dim:
            raise ValueError(
                f"observations have shape {obs_ND.shape}; expected (N, {self.obs_dim})"
            )
        obs = np.ascontiguousarray(obs_ND, dtype=np.float32)
        return torch.from_numpy(obs).to(self.device, non_blocking=True)

    # ---------------------------------------------------------------- learner

    def update(self, batch: ReplayBatch) -> dict[str, float]:
        """One gradient step; returns loss, q_mean, td_abs_mean and grad_norm as floats."""
        return stats_to_dict(self.update_no_sync(batch))

    def update_no_sync(self, batch: ReplayBatch) -> torch.Tensor:
        """One gradient step without waiting for the device.

        Returns a detached float32 tensor [4] on the learner's device holding
        :data:`UPDATE_STATS`: the loss, the mean Q(s, a) of the batch's actions, the mean |TD
        error| and the gradient norm before clipping. Runs with subnormal floats flushed to zero
        (:func:`nexlify.system.devices.denormals_flushed`: Adam's moments of weights whose
        gradient stays zero would otherwise sit in the subnormal range and slow every step).
        """
        with denormals_flushed():
            return self._update(batch)

    def _update(self, batch: ReplayBatch) -> torch.Tensor:
        c = self.config
        online = self.online
        if self._modal:
            online.train()
        if self._noisy:
            online.set_noise(True)
            self.reset_noise()
        with torch.autocast(
            self.device.type,
            dtype=self._amp_dtype or torch.float32,
            enabled=self._amp_dtype is not None,
        ):
            out = self._loss(batch)

        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            # fp16 runs on CUDA only, where the reference kernels make every loss with a graph.
            self.grad_scaler.scale(out.loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            grad_norm = _clip_grad_norm_(self._online_params, c.max_grad_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            out.backward()
            grad_norm = _clip_grad_norm_(self._online_params, c.max_grad_norm)
            self.optimizer.step()
        self.lr_schedule.after_gradient_step()
        self.n_updates += 1
        self._update_target()

        self.last_td_error_B = out.td_error_B
        return torch.stack(
            (
                out.loss.detach(),
                out.q_taken_B.detach().mean(),
                out.td_error_B.abs().mean(),
                grad_norm.detach().to(out.loss.dtype),
            )
        )

    def _loss(self, batch: ReplayBatch) -> DQNLoss:
        """The configured member of the DQN family's loss on one batch (see agent.losses).

        The online network runs first, then the targets under ``no_grad`` (dropout masks and
        batch-norm statistics follow that order). Distributional heads evaluate only the atoms
        they use: the online network's for the taken actions and, with double DQN, the target
        network's for a*.
        """
        if self.config.distributional == "c51":
            return self._c51_loss(batch)
        if self.config.distributional == "qr":
            return self._qr_loss(batch)
        c = self.config
        q_BA = self.online.forward_raw(batch.obs_BD).float()
        with torch.no_grad():
            next_q_target_BA = self.target.forward_raw(batch.next_obs_BD).float()
            next_q_online_BA = self.online(batch.next_obs_BD).float() if c.double_dqn else None
            target_B = td_target(
                batch.rewards_B,
                batch.discounts_B,
                batch.terminated_B,
                next_q_target_BA,
                next_q_online_BA,
            )
        return dqn_loss(q_BA, batch.actions_B, target_B, c.huber_delta, batch.weights_B)

    def _c51_loss(self, batch: ReplayBatch) -> DQNLoss:
        """Cross-entropy of the online distribution of (s, a) to the projected target."""
        online = self.online
        loss_to = self.kernels.c51_online(online, batch.obs_BD, batch.actions_B)
        with torch.no_grad():
            target_probs_BZ = self._c51_target(batch)
        return loss_to(target_probs_BZ, online.support_Z, batch.weights_B)

    def _c51_target(self, batch: ReplayBatch) -> torch.Tensor:
        """Projected target distribution [B, Z] of a* in s'.

        a* is the online network's argmax (double DQN: the target network then only computes
        a*'s atoms) or the target network's own, whose softmax then serves both its Q-values
        and the distribution that is projected.
        """
        c, target, kernels = self.config, self.target, self.kernels
        step = (batch.rewards_B, batch.discounts_B, batch.terminated_B, target.support_Z)
        if c.double_dqn:
            a_B = kernels.greedy(self.online, batch.next_obs_BD)
            next_logits = kernels.taken_output(target, batch.next_obs_BD, a_B).float()
        else:
            next_logits = target.forward_raw(batch.next_obs_BD).float()
        return kernels.c51_target(next_logits, *step, v_min=c.v_min, v_max=c.v_max)

    def _qr_loss(self, batch: ReplayBatch) -> DQNLoss:
        """Quantile Huber loss of the online quantiles of (s, a) to r + discount * theta(s', a*)."""
        online_BZ = self.kernels.taken_output(self.online, batch.obs_BD, batch.actions_B).float()
        with torch.no_grad():
            shift_B1 = (batch.discounts_B * (1.0 - batch.terminated_B)).unsqueeze(1)
            next_BZ = self._next_quantiles(batch.next_obs_BD)
            target_quantiles_BZ = torch.addcmul(batch.rewards_B.unsqueeze(1), shift_B1, next_BZ)
        return quantile_huber_taken_loss(
            online_BZ, target_quantiles_BZ, self.config.huber_delta, batch.weights_B
        )

    def _next_quantiles(self, next_obs_BD: torch.Tensor) -> torch.Tensor:
        """Target network's QR quantiles [B, Z] of a* in s' (a* as in :meth:`_c51_target`)."""
        if self.config.double_dqn:
            a_B = self.online(next_obs_BD).float().argmax(dim=1)
            return self.kernels.taken_output(self.target, next_obs_BD, a_B).float()
        next_BAZ = self.target.forward_raw(next_obs_BD).float()
        a_B = next_BAZ.mean(dim=2).argmax(dim=1)
        B, _, Z = next_BAZ.shape
        return next_BAZ.gather(1, a_B.view(B, 1, 1).expand(B, 1, Z)).squeeze(1)

    @torch.no_grad()
    def _update_target(self) -> None:
        c = self.config
        if c.target_update == "soft":
            for target_p, online_p in zip(self._target_params, self._online_params, strict=True):
                target_p.lerp_(online_p, c.tau)  # target + tau * (online - target)
        elif self.n_updates % c.target_update_interval == 0:
            self.sync_target()

    def sync_target(self) -> None:
        """Copy the online network into the target network (parameters and buffers)."""
        self.target.load_state_dict(self.online.state_dict())

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Online weights from ``state`` (e.g. the best or the SWA weights), target synced."""
        self.online.load_state_dict(state)
        self.sync_target()

    # ------------------------------------------------------------ checkpoints

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        metrics: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Write a checkpoint atomically (temp file, fsync, rename) and return its path.

        ``metrics`` values must convert to float; ``extra`` may hold only plain data (dict with
        str keys, list, tuple, str, int, float, bool, None) and tensors, so that it loads with
        ``torch.load(..., weights_only=True)``. ``torch.load(path)["model_state_dict"]`` is the
        online network's state dict, as in the original tool.
        """
        checkpoint = checkpoint_dict(self, metrics=metrics, extra=extra)
        path = Path(path)
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))
        return path


def checkpoint_dict(
    agent: DQNAgent,
    *,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict :meth:`DQNAgent.save` writes (CPU tensors and plain data only)."""
    _check_plain(extra or {}, "extra")
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "nexlify_version": nexlify.__version__,
        "model_state_dict": _to_cpu(agent.online.state_dict()),
        "target_state_dict": _to_cpu(agent.target.state_dict()),
        "optimizer_state_dict": _to_cpu(agent.optimizer.state_dict()),
        "agent_config": _config_to_plain(agent.config),
        "obs_dim": agent.obs_dim,
        "n_actions": agent.n_actions,
        "n_updates": agent.n_updates,
        "noise_generator_state": agent.noise_generator.get_state().cpu(),
        "metrics": {str(k): float(v) for k, v in (metrics or {}).items()},
        "extra": dict(extra or {}),
    }


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict in a checkpoint file, read with ``weights_only=True`` (CheckpointError if not)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CheckpointError(
            f"{path}: cannot read checkpoint (truncated or corrupted file, not a torch file, or it "
            f"holds objects other than tensors and plain data): {type(exc).__name__}: {reason}"
        ) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    return ckpt


def load_agent(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[DQNAgent, dict[str, Any]]:
    """Rebuild an agent from :meth:`DQNAgent.save` output; never executes code from the file.

    Returns the agent and a dict with ``metrics``, ``extra``, ``n_updates``, ``nexlify_version``
    and ``format_version``. Raises CheckpointError naming the file and what is wrong. On an
    ensemble file it returns the first (best) member, with the ensemble's ``metrics``/``extra``
    and ``ensemble_members`` in the dict; ``nexlify.agent.ensemble.load_policy`` returns the
    whole ensemble.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, device)
    if ckpt.get("format") == "nexlify-ensemble" and isinstance(ckpt.get("members"), list):
        members = ckpt["members"]
        if not members:
            raise CheckpointError(f"{path}: the ensemble has no members")
        agent, info = agent_from_checkpoint(f"{path} member 0", members[0], device)
        info.update(metrics=dict(ckpt.get("metrics", {})), extra=dict(ckpt.get("extra", {})),
                    ensemble_members=len(members))  # fmt: skip
        return agent, info
    return agent_from_checkpoint(str(path), ckpt, device)


def agent_from_checkpoint(
    path: str, ckpt: Any, device: str | torch.device = "cpu"
) -> tuple[DQNAgent, dict[str, Any]]:
    """Rebuild an agent from a checkpoint dict; ``path`` names it in errors."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks keys {missing}")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: format is {ckpt['format']!r}, expected {CHECKPOINT_FORMAT!r}"
        )
    version = ckpt["format_version"]
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported (this nexlify reads 1.."
            f"{CHECKPOINT_FORMAT_VERSION}; upgrade nexlify to read newer files)"
        )
    try:
        saved = dict(ckpt["agent_config"])
        if version == 1:  # format 1 predates the Rainbow switches: it is a plain DQN
            saved = {**PLAIN_DQN, **saved}
        config = AgentConfig.from_dict(saved)
        agent = DQNAgent(int(ckpt["obs_dim"]), int(ckpt["n_actions"]), config, device)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: agent_config/obs_dim/n_actions are invalid: {exc}") from exc
    for key, net in (("model_state_dict", agent.online), ("target_state_dict", agent.target)):
        try:  # strict: lists missing and unexpected keys and every shape mismatch
            net.load_state_dict(ckpt[key])
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{path}: {key} does not match agent_config/obs_dim/n_actions: "
                + " ".join(str(exc).split())
            ) from exc
    try:
        state = _portable_optimizer_state(ckpt["optimizer_state_dict"], agent.optimizer)
        agent.optimizer.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: optimizer_state_dict does not fit the network: {exc}"
        ) from exc
    _check_optimizer_state(Path(path), agent.optimizer)
    noise_state = ckpt.get("noise_generator_state")
    if isinstance(noise_state, torch.Tensor):
        try:
            agent.noise_generator.set_state(noise_state.cpu())
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: noise_generator_state is invalid: {exc}") from exc
    try:
        agent.n_updates = int(ckpt.get("n_updates", 0))
        info = {
            "metrics": dict(ckpt.get("metrics", {})),
            "extra": dict(ckpt.get("extra", {})),
            "n_updates": agent.n_updates,
            "nexlify_version": ckpt.get("nexlify_version"),
            "format_version": version,
        }
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: n_updates/metrics/extra are malformed: {exc}") from exc
    return agent, info


# ------------------------------------------------------------------ helpers


def _make_adam(net: nn.Module, config: AgentConfig) -> torch.optim.Adam:
    # The fused kernel is one call per step instead of ~10 small ops per parameter (about 15%
    # of a CPU update at the default size); older torch builds lack it for some devices.
    kwargs: dict[str, Any] = {
        "lr": config.learning_rate,
        "eps": config.adam_eps,
        "weight_decay": config.weight_decay,
    }
    try:
        return torch.optim.Adam(net.parameters(), fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(net.parameters(), **kwargs)


def _portable_optimizer_state(state: Any, optimizer: torch.optim.Optimizer) -> Any:
    # The implementation choice (fused/foreach) belongs to the machine that loads, not the file.
    if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list):
        return state
    current = optimizer.param_groups
    if len(state["param_groups"]) != len(current):
        return state  # load_state_dict reports the mismatch
    groups = [
        {**group, "fused": mine.get("fused"), "foreach": mine.get("foreach")}
        if isinstance(group, dict)
        else group
        for group, mine in zip(state["param_groups"], current, strict=True)
    ]
    return {**state, "param_groups": groups}


def _clip_grad_norm_(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global gradient norm before clipping; scales gradients down to ``max_norm`` if > 0.

    Same arithmetic as ``torch.nn.utils.clip_grad_norm_`` (coefficient max_norm / (norm + 1e-6)
    clamped at 1, applied unconditionally so that the device is never asked for the norm),
    without its grouping and checks, which cost more than the arithmetic at this size.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if max_norm > 0:
        coef = (max_norm / (norm + 1e-6)).clamp_(max=1.0)
        for g in grads:
            g.mul_(coef)
    return norm


def _derived_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for one component's generator, derived from the run seed."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(2, np.uint64)[0] >> 1)


def _config_to_plain(config: AgentConfig) -> dict[str, Any]:
    plain = asdict(config)
    plain["hidden_sizes"] = list(config.hidden_sizes)
    return plain


def _to_cpu(value: Any) -> Any:
    # Checkpoints hold CPU tensors so that a bare torch.load works on a machine without a GPU.
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a str")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where}: {type(value).__name__} cannot go into a checkpoint (weights_only loading "
        "accepts plain data and tensors only)"
    )


def _check_optimizer_state(path: Path, optimizer: torch.optim.Optimizer) -> None:
    # load_state_dict checks parameter counts but not moment shapes; a bad file would only
    # fail at the first step, far from its cause.
    for param, state in optimizer.state.items():
        for name, value in state.items():
            if name in ("exp_avg", "exp_avg_sq") and (
                not isinstance(value, torch.Tensor) or value.shape != param.shape
            ):
                found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise CheckpointError(
                    f"{path}: optimizer_state_dict {name} is {found}, the parameter is "
                    f"{tuple(param.shape)}"
                )
