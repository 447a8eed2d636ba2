"""The training loss of one batch, two ways: plain, and with the shared instruction computed once.

Every example of a batch starts with the same instruction (the prompt prefix of its type list:
168 of ~260 tokens of a BC5CDR example). ``prefix_loss_sum`` runs that prefix once, with
gradients, broadcasts its keys and values to the batch rows and runs only the suffixes
(sentence, template tail, answer) on top of them, with positions offset by the prefix length
("Prefix Grouper", arXiv 2506.05433). The loss and the gradients equal ``plain_loss_sum``'s
(exactly without dropout; with LoRA dropout the prefix rows share one dropout mask, which keeps
the expected gradient); the prefix costs one row instead of B. Both pad with
``train_data.collate`` and apply the output head only where there is a loss (the answer tokens),
never over the prompt's full-vocabulary logits.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from bulkner.training.data import IGNORE, Example, collate


def decoder_and_head(model):
    """The transformer body and the output head of a causal LM, through a peft wrapper if any
    (LoRA layers are injected in place, so the body still carries the adapter)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def answer_loss(hidden, labels, head):
    """Summed cross-entropy of the positions whose next token has a label, and their count.

    ``hidden`` is ``(B, S, H)``; ``labels`` ``(B, S)`` holds the token at each position (IGNORE
    where there is no loss); position ``t`` predicts the label at ``t + 1``.
    """
    import torch.nn.functional as F

    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def plain_loss_sum(model, examples: Sequence[Example], pad_id: int, device, autocast: bool):
    """The reference step: every row runs its whole sequence (right-padded)."""
    import torch

    ids, mask, labels = (torch.tensor(x) for x in collate(examples, pad_id))
    decoder, head = decoder_and_head(model)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        return answer_loss(hidden, labels.to(device), head)


def prefix_loss_sum(model, examples: Sequence[Example], pad_id: int, device, autocast: bool):
    """The shared-prefix step: the instruction once, broadcast to the rows, then the suffixes.

    All ``examples`` must share one prefix (``batch_plan`` groups them so); raises ``ValueError``
    otherwise.
    """
    import torch

    prefix = examples[0].prefix
    if not prefix or any(e.prefix != prefix for e in examples):
        raise ValueError("a shared-prefix batch needs examples with one common, non-empty prefix")
    start, rows = len(prefix), len(examples)
    suffixes = [replace(e, input_ids=e.input_ids[start:], prompt_length=e.prompt_length - start, prefix_length=0) for e in examples]
    ids, suffix_mask, labels = (torch.tensor(x) for x in collate(suffixes, pad_id))
    width = ids.shape[1]
    mask = torch.cat([torch.ones((rows, start), dtype=suffix_mask.dtype), suffix_mask], dim=1)
    decoder, head = decoder_and_head(model)
    positions = torch.arange(start, start + width, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        cache = decoder(input_ids=torch.tensor([prefix], device=device), use_cache=True).past_key_values
        cache.batch_repeat_interleave(rows)  # differentiable: gradients flow back into the one prefix row
        hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache,
                         position_ids=positions.expand(rows, -1), cache_position=positions,  # transformers 4.x reads it; 5.x the cache
                         use_cache=True).last_hidden_state
        return answer_loss(hidden, labels.to(device), head)
