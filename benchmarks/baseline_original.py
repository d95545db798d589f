"""A baseline in the style of the original A1111 extension, the reference point of our benchmarks.

It computes the docs/semantics.md math (no keyword options) the way the original extension organises
it (docs/migrating.md), so that timings compare architectures, not formulas:

- the prompt becomes a tree of node objects walked by visitor classes, through ``accept``;
- each batch item is combined on its own, in a Python loop;
- every leaf occurrence has its own slot in a flat ``x_out`` list (duplicates are not merged) and
  each visitor recomputes ``x_out[i] - uncond`` for the leaves it visits;
- root-level AND parts first go through a webui-style CFG combine (groups evaluated there once),
  then the visitors walk the whole tree again for the auxiliary deltas;
- saliency is ``torch.softmax(|x|.flatten())`` per map, stacked, then ``argmax``;
- top-k uses ``torch.kthvalue`` over the flattened item; the projection uses ``torch.norm``.

Written for this project; not a copy of the original code.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import torch

from neutral_lang.ast import Group, Keyword, Prompt

__all__ = ["combine"]


@dataclasses.dataclass
class LeafNode:
    text: str
    weight: float
    keyword: Keyword

    def accept(self, visitor, *args):
        return visitor.visit_leaf(self, *args)


@dataclasses.dataclass
class CompositeNode:
    children: list
    weight: float
    keyword: Keyword

    def accept(self, visitor, *args):
        return visitor.visit_composite(self, *args)


def _to_nodes(prompt: Prompt, weight: float = 1.0, keyword: Keyword = Keyword.AND) -> CompositeNode:
    children = []
    for part in prompt.parts:
        if part.options:
            raise ValueError("the original-style baseline has no keyword options")
        if isinstance(part.body, Group):
            children.append(_to_nodes(part.body.prompt, part.weight, part.keyword))
        else:
            children.append(LeafNode(part.body.text, part.weight, part.keyword))
    return CompositeNode(children, weight, keyword)


class FlatSizeVisitor:
    """How many ``x_out`` slots (leaf occurrences) a node spans."""

    def visit_leaf(self, node):
        return 1

    def visit_composite(self, node):
        return sum(child.accept(self) for child in node.children)


class LeafTextsVisitor:
    def visit_leaf(self, node):
        return [node.text]

    def visit_composite(self, node):
        return [text for child in node.children for text in child.accept(self)]


@dataclasses.dataclass
class Args:
    x_out: list  # one [C, H, W] prediction per leaf occurrence
    uncond: torch.Tensor  # [C, H, W]


class CondDeltaVisitor:
    """``full`` restricted to AND children: the base delta of a node."""

    def visit_leaf(self, node, args, index):
        return args.x_out[index] - args.uncond

    def visit_composite(self, node, args, index):
        delta = torch.zeros_like(args.uncond)
        for child in node.children:
            if child.keyword == Keyword.AND:
                child_delta = child.accept(CondDeltaVisitor(), args, index)
                child_delta += child.accept(AuxCondDeltaVisitor(), args, child_delta, index)
                delta += child.weight * child_delta
            index += child.accept(FlatSizeVisitor())
        return delta


class AuxCondDeltaVisitor:
    """The auxiliary delta of a node: its AND_PERP, AND_TOPK and AND_SALT children."""

    def visit_leaf(self, node, args, delta, index):
        return torch.zeros_like(args.uncond)

    def visit_composite(self, node, args, delta, index):
        aux = torch.zeros_like(args.uncond)
        salient = []
        for child in node.children:
            if child.keyword != Keyword.AND:
                child_delta = child.accept(CondDeltaVisitor(), args, index)
                child_delta += child.accept(AuxCondDeltaVisitor(), args, child_delta, index)
                if child.keyword == Keyword.AND_PERP:
                    aux += child.weight * perpendicular(delta, child_delta)
                elif child.keyword == Keyword.AND_TOPK:
                    aux += child.weight * top_k(child_delta, 0.05)
                else:
                    salient.append((child_delta, child.weight))
            index += child.accept(FlatSizeVisitor())
        aux += salient_blend(delta, salient)
        return aux


def perpendicular(normal, vector):
    if (normal == 0).all():
        return vector
    return vector - normal * torch.sum(normal * vector) / torch.norm(normal) ** 2


def saliency(x):
    return torch.softmax(torch.abs(x).flatten(), dim=0).reshape_as(x)


def salient_blend(normal, vectors):
    maps = [saliency(normal)] + [saliency(vector) for vector, _ in vectors]
    winner = torch.argmax(torch.stack(maps, dim=0), dim=0)
    result = torch.zeros_like(normal)
    for i, (vector, weight) in enumerate(vectors, start=1):
        result += weight * (winner == i).to(normal.dtype) * (vector - normal)
    return result


def top_k(vector, k):
    index = int((1 - k) * vector.numel())
    if index < 1:
        return vector.clone()
    threshold = torch.kthvalue(torch.abs(vector.flatten()), index).values
    return vector * (torch.abs(vector) >= threshold).to(vector.dtype)


def webui_denoised(root, args, scale):
    """What A1111 itself makes of the root's AND parts: ``u + s * sum w * (x - u)``."""
    denoised = args.uncond.clone()
    index = 0
    for child in root.children:
        if child.keyword == Keyword.AND:
            if isinstance(child, LeafNode):
                x = args.x_out[index]
            else:
                x = child.accept(CondDeltaVisitor(), args, index)
                x += child.accept(AuxCondDeltaVisitor(), args, x, index)
                x += args.uncond
            denoised += (x - args.uncond) * (child.weight * scale)
        index += child.accept(FlatSizeVisitor())
    return denoised


def rescale(cfg_cond, cond, r):
    if r == 0:
        return cfg_cond
    mean = cfg_cond.mean()
    target_mean = (1 - r) * mean + r * cond.mean()
    factor = r * (cond.std() / cfg_cond.std() - 1) + 1
    return target_mean + (cfg_cond - mean) * factor


def combine(
    prompt_ast: Prompt,
    uncond: torch.Tensor,
    conds_dict: Mapping[str, torch.Tensor],
    guidance_scale: float,
    cfg_rescale: float = 0.0,
) -> torch.Tensor:
    """Guided noise prediction for ``uncond`` ``[B, C, H, W]``, one batch item at a time."""
    root = _to_nodes(prompt_ast)
    texts = root.accept(LeafTextsVisitor())
    out = torch.empty_like(uncond)
    for b in range(uncond.shape[0]):
        args = Args([conds_dict[text][b] for text in texts], uncond[b])
        denoised = webui_denoised(root, args, guidance_scale)
        delta = root.accept(CondDeltaVisitor(), args, 0)
        aux = root.accept(AuxCondDeltaVisitor(), args, delta, 0)
        cfg_cond = denoised + aux * guidance_scale
        out[b] = rescale(cfg_cond, args.uncond + delta + aux, cfg_rescale)
    return out
