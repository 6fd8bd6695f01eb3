"""The choices that train.py, eval.py and frontier.py share, each written once.

Plain tuples, no torch: the flag declarations (`longrec_core.train_flags`), the grid axes of
frontier.py and the checks in the model, examples, losses, metrics and schedule modules all read
them from here, so a new regime or loss is added in one place.
"""

from __future__ import annotations

# windows: which training windows an epoch makes (longrec_core.examples)
# mixed = last for --mixed-epochs, then sliding; session = windows ending at session ends
REGIMES = ("last", "sliding", "mixed", "random", "session")
TARGETS = ("all", "fresh")  # fresh: only targets no later window of the same user covers

# model: the item embedding (longrec_core.model)
# full N x d table, the k-shift shared table, an N x (d / compression) table and a projection to d, or
# codes: m data-driven codes per item (longrec_core.codes), each picking a d/m-wide row of its sub-table
ITEM_EMBS = ("full", "kshift", "lowrank", "codes")
KSHIFT_SCHEMES = ("mix", "rotate", "rotate_signed")  # rotate_signed = the paper code's bug
# how the codes come from the training matrix's SVD (longrec_core.codes): one component per code cut
# into equal buckets (RecJPQ), or product quantisation of more components
CODE_ASSIGNMENTS = ("quantile", "pq")
# [N+1, k] int32 buffer, hashed per batch by the core, or chosen by the item's data-driven code
KSHIFT_ROW_SOURCES = ("stored", "computed", "codes")
# the shared table's optimizer: AdamW (dense gradient, two moments per value) or longrec_core.optim's
# row-wise rule (sparse gradient, 8 bytes of state per row)
KSHIFT_OPTIMIZERS = ("adamw", "rowwise")
# how the history summary turns the events before a window into its tokens: the mean item vector of
# each equal run of them, or learned queries attending over all of them (longrec_core.model)
SUMMARY_POOLS = ("mean", "attention")

# loss (longrec_core.losses)
LOSSES = ("ce", "sampled", "chunked")
SAMPLERS = ("uniform", "popularity")  # negatives of the sampled softmax

# optimization (longrec_core.schedule)
SCHEDULES = ("constant", "cosine")  # the learning rate after warm-up

# evaluation (longrec_core.metrics)
KS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)  # cut-offs of HR/NDCG/MRR@K reported by default
FILTER_SEEN_CHOICES = ("auto", "yes", "no")  # drop the user's seen items from the competitors
SPLITS = ("test", "valid")  # the targets eval.py ranks

# compute
DEVICES = ("auto", "cpu", "cuda")  # auto = cuda when available
PRECISIONS = ("auto", "fp32", "bf16")  # auto = bf16 autocast on CUDA, fp32 on CPU
