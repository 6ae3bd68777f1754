"""NeRF-RCNN (Instance-NeRF §3.2, appendix B): 3D boxes, classes and 3D masks from a NeRF's grid.

Input: a (4, X, Y, Z) grid of radiance (RGB) and alpha sampled over the scene box (see
``physinv.instance.scenes``). Stages, as NeRF-RPN + Mask R-CNN in 3D:

1. backbone: a small 3D CNN (strides 2, 4, 8) with a feature pyramid (FPN) on strides 4 and 8
   for the proposals, and a stride-2 level for the RoI heads;
2. proposals: NeRF-RPN's anchor-free head (FCOS in 3D): per location an objectness logit, a
   centre-ness logit and the six distances to the box faces; focal loss, IoU loss and centre-ness
   binary cross-entropy; top-scoring boxes, 3D NMS at IoU 0.3 (the paper's test value; the RoIs
   that train the heads come from NMS at 0.7, Faster/Mask R-CNN's training value, so each object
   gives the class head several jittered positives; benchmarks/RESULTS.md measures it against 0.3);
3. 3D RoIAlign (``grid_sample``, one trilinear sample per bin: torchvision's adaptive sampling
   ratio ceil(RoI cells / m) is 1 for every RoI at these sizes) of the stride-2 level:
   m = 5 for the box head, m = 10 for the mask head (appendix B);
4. box head: two fully connected layers, then class logits (L = classes + background) and
   per-class box deltas (eq. 15); mask head: 3D convolutions, L mask logits of m^3;
5. losses (appendix B, weights 1): cross-entropy on the RoI class, smooth L1 on the deltas of the
   ground-truth class of positive RoIs (eq. 14), binary cross-entropy on the mask of the
   ground-truth class (eq. 16); each RoI's target is the ground-truth box of largest IoU;
6. inference: box head on the proposals, class = best non-background class, score = its softmax
   probability (as Mask R-CNN and the Instance-NeRF code: a class head that has not yet told the
   shapes apart spreads the foreground over the classes and caps every score near the largest class
   prior, ~0.4 here, below the threshold), boxes decoded, scores >= 0.5 kept, 3D NMS at 0.15 (the
   paper's test values), masks for the kept boxes.

Deviations (numbered, each tied to a test or stated):
1. The backbone is a small CNN with GroupNorm (space-to-depth stem, 16-32-64 channels, FPN 24) instead of VGG19: the detector
   has to train on 2 CPU cores in minutes and ship in <= 5 MB (test_untrained_detector_runs_and_file_is_small).
2. Classification uses softmax cross-entropy (the main text's "multi-class cross-entropy"); the
   appendix's eq. (13) writes a sigmoid BCE per class. Both train the same argmax.
3. Detection NMS at 0.15 is class-agnostic (objects do not interpenetrate), so two classes on one
   object cannot both survive.
4. RoIAlign reads one level, stride 2 (the stem's lateral plus the upsampled stride-4 level, no 3x3
   output convolution), for every RoI: on 32^3 grids every object spans 2-4 stride-4 cells, too
   few for its shape (sphere / box / cylinder), Mask R-CNN's level rule would send all of them to
   the finest level anyway. ``roi_level = 4`` gives the earlier stride-4 heads.
5. The shipped detector reads 32^3 grids (``grid_res``), below the paper's 64-160: CPU training
   time (any multiple of 8 works; ``make-scenes --res 64`` + ``train-detector`` for a finer one).
6. Only ``mask_rois`` (8) positive RoIs per scene train the mask head, and RPN positives use FCOS
   centre sampling (1.5 strides) without FCOS's per-level size ranges (two levels only).
7. The input colour is premultiplied by alpha (``premultiply``): a NeRF's colour where there is no
   matter is arbitrary (the background colour of the renders, white for the built-in scene, while
   the generated scenes have dim noise), and alpha * RGB removes it from what the network sees.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from physinv.instance.boxes import box_iou_3d, box_volume, decode_boxes, encode_boxes, nms_3d, paired_iou_3d

NUM_CLASSES = 4  # background, sphere, box, cylinder (physinv.instance.scenes.CLASS_NAMES)


@dataclass
class RcnnConfig:
    """Architecture and detection constants (the paper's values where it gives them)."""

    in_channels: int = 4
    width: int = 16  # channels at stride 2; doubled at each stride
    fpn_channels: int = 24
    mask_channels: int = 16
    num_classes: int = NUM_CLASSES
    box_roi: int = 5  # m for the box head
    mask_roi: int = 10  # m for the mask head
    fc: int = 128
    rpn_nms: float = 0.3  # proposals at test time (the paper's value)
    rpn_nms_train: float = 0.7  # proposals that train the heads (Faster/Mask R-CNN's training value: several
    # overlapping proposals per object, so the class head sees positives as jittered as the test proposals)
    det_nms: float = 0.15
    score_threshold: float = 0.5
    pre_nms_topk: int = 200
    post_nms_topk: int = 50
    rois_per_scene: int = 64
    mask_rois: int = 8  # positive RoIs per scene that train the mask head (the costliest head)
    positive_fraction: float = 0.25  # Mask R-CNN's (and the Instance-NeRF code's) share of positive RoIs
    fg_iou: float = 0.5
    grid_res: int = 64  # longest side of the grid the detector expects
    roi_level: int = 2  # pyramid stride the RoI heads read (2 or 4; see deviation 4)
    roi_sampling: int = 1  # trilinear samples per bin and axis in RoIAlign
    premultiply: bool = True  # the network sees (alpha * RGB, alpha): see deviation 7


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


def space_to_depth(x: Tensor, block: int) -> Tensor:
    """(B, C, X, Y, Z) -> (B, C * block^3, X / block, Y / block, Z / block) (3D pixel-unshuffle)."""
    b, c, nx, ny, nz = x.shape
    x = x.reshape(b, c, nx // block, block, ny // block, block, nz // block, block)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * block**3, nx // block, ny // block, nz // block)


class Backbone(nn.Module):
    """3D CNN + FPN: (B, 4, X, Y, Z) -> {4: (B, F, X/4, ...), 8: (B, F, X/8, ...)}, and with
    ``roi_level`` 2 also {2: (B, F, X/2, ...)} for the RoI heads (not the proposal head).

    The stride-4 stem is two space-to-depth steps each followed by a 1x1x1 convolution (a
    learned 2x2x2 stride-2 convolution), because full-resolution 3x3x3 convolutions with few
    channels are slow on CPUs; the grid size must be a multiple of 8 (the scenes' is).
    """

    def __init__(self, cfg: RcnnConfig):
        super().__init__()
        w = cfg.width
        self.stem = nn.Sequential(
            nn.Conv3d(cfg.in_channels * 8, w, 1), nn.GroupNorm(4, w), nn.ReLU(inplace=True),
        )
        self.stem2 = nn.Sequential(nn.Conv3d(w * 8, 2 * w, 1), nn.GroupNorm(4, 2 * w), nn.ReLU(inplace=True), _conv(2 * w, 2 * w))
        self.c8 = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w))
        self.lat4 = nn.Conv3d(2 * w, cfg.fpn_channels, 1)
        self.lat8 = nn.Conv3d(4 * w, cfg.fpn_channels, 1)
        self.out4 = nn.Conv3d(cfg.fpn_channels, cfg.fpn_channels, 3, padding=1)
        self.out8 = nn.Conv3d(cfg.fpn_channels, cfg.fpn_channels, 3, padding=1)
        # stride-2 level: the stem's output (lateral 1x1) plus the upsampled stride-4 level, without
        # FPN's 3x3 output convolution (the costliest layer at this size; the heads convolve anyway)
        self.lat2 = nn.Conv3d(w, cfg.fpn_channels, 1) if cfg.roi_level == 2 else None
        self.premultiply = cfg.premultiply

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        if self.premultiply:
            x = torch.cat([x[:, :3] * x[:, 3:4], x[:, 3:4]], 1)
        c2 = self.stem(space_to_depth(x, 2))
        c4 = self.stem2(space_to_depth(c2, 2))
        c8 = self.c8(c4)
        p8 = self.lat8(c8)
        p4 = self.lat4(c4) + F.interpolate(p8, size=c4.shape[2:], mode="nearest")
        p4 = self.out4(p4)
        out = {4: p4, 8: self.out8(p8)}
        if self.lat2 is not None:
            out[2] = self.lat2(c2) + F.interpolate(p4, size=c2.shape[2:], mode="nearest")
        return out


class FcosHead(nn.Module):
    """Shared over levels: objectness (1), centre-ness (1) and log-distances to the 6 faces."""

    def __init__(self, cfg: RcnnConfig):
        super().__init__()
        c = cfg.fpn_channels
        self.tower = nn.Sequential(_conv(c, c), _conv(c, c))
        self.cls = nn.Conv3d(c, 1, 3, padding=1)
        self.ctr = nn.Conv3d(c, 1, 3, padding=1)
        self.reg = nn.Conv3d(c, 6, 3, padding=1)
        nn.init.constant_(self.cls.bias, -math.log(99.0))  # prior 0.01 (focal-loss initialisation)
        self.scales = nn.Parameter(torch.ones(2))

    def forward(self, feats: dict[int, Tensor]) -> dict[int, tuple[Tensor, Tensor, Tensor]]:
        out = {}
        for li, stride in enumerate((4, 8)):
            t = self.tower(feats[stride])
            out[stride] = (self.cls(t)[:, 0], self.ctr(t)[:, 0], self.reg(t) * self.scales[li])
        return out


def locations(shape: tuple[int, ...], stride: int, device) -> Tensor:
    """(x, y, z, 3) centres of a level's cells in input-voxel units."""
    axes = [(torch.arange(n, device=device, dtype=torch.float32) + 0.5) * stride for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


def _distances_to_box(points: Tensor, boxes: Tensor) -> Tensor:
    """(P, 3) points, (G, 6) boxes -> (P, G, 6) distances to the faces (lo faces, then hi faces)."""
    return torch.cat([points[:, None, :] - boxes[None, :, :3], boxes[None, :, 3:] - points[:, None, :]], -1)


def fcos_targets(points: Tensor, stride: int, boxes: Tensor, centre_radius: float = 1.5) -> tuple[Tensor, Tensor]:
    """Positive mask (P,) and the assigned box (P, 6) for the level's points (P, 3).

    A point is positive for a box when it is inside it and within ``centre_radius`` strides of its
    centre on every axis (FCOS centre sampling, clipped to the box); ties go to the smallest box.
    """
    if len(boxes) == 0:
        return torch.zeros(len(points), dtype=torch.bool, device=points.device), points.new_zeros(len(points), 6)
    d = _distances_to_box(points, boxes)
    inside = d.min(-1).values > 0
    centre = 0.5 * (boxes[:, :3] + boxes[:, 3:])
    near = ((points[:, None, :] - centre[None]).abs() < centre_radius * stride).all(-1)
    ok = inside & near
    vol = box_volume(boxes)[None].expand(len(points), -1).masked_fill(~ok, float("inf"))
    best = vol.argmin(1)
    return ok.any(1), boxes[best]


def centreness(d: Tensor) -> Tensor:
    """FCOS centre-ness in 3D: cube root of the product over axes of min/max face distances. d (..., 6)."""
    lo, hi = d[..., :3].clamp_min(1e-6), d[..., 3:].clamp_min(1e-6)
    return (torch.minimum(lo, hi) / torch.maximum(lo, hi)).prod(-1).pow(1.0 / 3.0)


def roi_align_3d(feature: Tensor, rois: Tensor, size: int, stride: int, sampling: int = 2) -> Tensor:
    """3D RoIAlign: feature (C, X, Y, Z) at ``stride`` input voxels per cell, rois (R, 6) in input
    voxel units -> (R, C, size, size, size): each bin the mean of ``sampling``^3 trilinear samples."""
    r = len(rois)
    n = size * sampling
    frac = (torch.arange(n, device=rois.device, dtype=feature.dtype) + 0.5) / n  # bin-sample positions in [0, 1]
    lo, ext = rois[:, :3], rois[:, 3:] - rois[:, :3]
    # (R, n, n, n, 3) input-voxel coordinates of the samples, x along dim 1
    axes = [lo[:, d, None] + frac[None] * ext[:, d, None] for d in range(3)]
    px = axes[0][:, :, None, None].expand(r, n, n, n)
    py = axes[1][:, None, :, None].expand(r, n, n, n)
    pz = axes[2][:, None, None, :].expand(r, n, n, n)
    dims = feature.shape[1:]
    # grid_sample on (1, C, X, Y, Z): the last grid coordinate runs over Z, then Y, then X
    norm = [2.0 * p / (stride * s) - 1.0 for p, s in zip((px, py, pz), dims)]
    grid = torch.stack([norm[2], norm[1], norm[0]], -1).reshape(1, r * n, n, n, 3)
    sampled = F.grid_sample(feature[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(feature.shape[0], r, n, n, n).transpose(0, 1)
    return F.avg_pool3d(sampled, sampling) if sampling > 1 else sampled


class NerfRcnn(nn.Module):
    """NeRF-RPN proposals + box/class head + 3D mask head on a (4, X, Y, Z) grid."""

    def __init__(self, cfg: RcnnConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or RcnnConfig()
        self.backbone = Backbone(cfg)
        self.rpn = FcosHead(cfg)
        c, L = cfg.fpn_channels, cfg.num_classes
        self.box_fc = nn.Sequential(nn.Flatten(), nn.Linear(c * cfg.box_roi**3, cfg.fc), nn.ReLU(inplace=True), nn.Linear(cfg.fc, cfg.fc), nn.ReLU(inplace=True))
        self.cls_out = nn.Linear(cfg.fc, L)
        self.box_out = nn.Linear(cfg.fc, 6 * L)
        nn.init.normal_(self.box_out.weight, std=0.001)
        nn.init.zeros_(self.box_out.bias)
        mc = cfg.mask_channels
        self.mask_head = nn.Sequential(_conv(c, mc), _conv(mc, mc), _conv(mc, mc), nn.Conv3d(mc, L, 1))

    # -- proposals
    def proposals(self, rpn_out: dict[int, tuple[Tensor, Tensor, Tensor]], shape: tuple[int, ...], nms: float | None = None) -> tuple[Tensor, Tensor]:
        """Boxes (P, 6) in voxel units and scores (P,) after top-k and NMS at ``nms`` (None: ``rpn_nms``,
        the test value; training passes ``rpn_nms_train``), one scene."""
        boxes, scores = [], []
        for stride, (cls, ctr, reg) in rpn_out.items():
            pts = locations(cls.shape[1:], stride, cls.device).reshape(-1, 3)
            score = torch.sqrt(torch.sigmoid(cls[0]) * torch.sigmoid(ctr[0])).reshape(-1)
            dist = torch.exp(reg[0].clamp(max=6.0)).permute(1, 2, 3, 0).reshape(-1, 6) * stride
            k = min(self.cfg.pre_nms_topk, len(score))
            top = torch.topk(score, k).indices
            box = torch.cat([pts[top] - dist[top, :3], pts[top] + dist[top, 3:]], -1)
            boxes.append(box)
            scores.append(score[top])
        boxes_t, scores_t = torch.cat(boxes), torch.cat(scores)
        limit = torch.tensor(shape, device=boxes_t.device, dtype=boxes_t.dtype)
        boxes_t = torch.cat([boxes_t[:, :3].clamp_min(0), torch.minimum(boxes_t[:, 3:], limit)], -1)
        valid = (boxes_t[:, 3:] - boxes_t[:, :3] > 0.5).all(-1)
        boxes_t, scores_t = boxes_t[valid], scores_t[valid]
        keep = nms_3d(boxes_t.detach(), scores_t.detach(), self.cfg.rpn_nms if nms is None else nms)[: self.cfg.post_nms_topk]
        return boxes_t[keep].detach(), scores_t[keep].detach()

    def heads(self, feats: dict[int, Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits (R, L) and box deltas (R, L, 6) for RoIs (R, 6) of scene 0."""
        f = roi_align_3d(feats[self.cfg.roi_level][0], rois, self.cfg.box_roi, self.cfg.roi_level, self.cfg.roi_sampling)
        h = self.box_fc(f)
        return self.cls_out(h), self.box_out(h).view(len(rois), -1, 6)

    def mask_logits(self, feats: dict[int, Tensor], rois: Tensor) -> Tensor:
        """(R, L, m, m, m) mask logits for RoIs (R, 6)."""
        return self.mask_head(roi_align_3d(feats[self.cfg.roi_level][0], rois, self.cfg.mask_roi, self.cfg.roi_level, self.cfg.roi_sampling))

    # -- training
    def loss(self, grid: Tensor, boxes: Tensor, classes: Tensor, labels: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Losses for one scene: grid (4, X, Y, Z), ground-truth boxes (G, 6) voxel units, classes
        (G,) in 1..L-1, instance labels (X, Y, Z) with k = boxes[k-1]. Returns the terms and ``total``."""
        cfg = self.cfg
        feats = self.backbone(grid[None])
        rpn_out = self.rpn(feats)
        # --- RPN (FCOS) losses over both levels
        cls_l, ctr_l, reg_l, n_pos = 0.0, 0.0, 0.0, 0
        for stride, (cls, ctr, reg) in rpn_out.items():
            pts = locations(cls.shape[1:], stride, grid.device).reshape(-1, 3)
            pos, tbox = fcos_targets(pts, stride, boxes)
            logits = cls[0].reshape(-1)
            cls_l = cls_l + sigmoid_focal_loss(logits, pos.float()).sum()
            if pos.any():
                d_t = torch.cat([pts[pos] - tbox[pos, :3], tbox[pos, 3:] - pts[pos]], -1)
                d_p = torch.exp(reg[0].clamp(max=6.0)).permute(1, 2, 3, 0).reshape(-1, 6)[pos] * stride
                ctr_t = centreness(d_t)
                pred_box = torch.cat([pts[pos] - d_p[:, :3], pts[pos] + d_p[:, 3:]], -1)
                iou = paired_iou_3d(pred_box, tbox[pos])
                reg_l = reg_l + ((-torch.log(iou.clamp_min(1e-6))) * ctr_t).sum() / ctr_t.sum().clamp_min(1e-6) * pos.sum()
                ctr_l = ctr_l + F.binary_cross_entropy_with_logits(ctr[0].reshape(-1)[pos], ctr_t, reduction="sum")
                n_pos += int(pos.sum())
        n = max(n_pos, 1)
        rpn_cls, rpn_reg, rpn_ctr = cls_l / n, reg_l / n, ctr_l / n
        # --- second stage: proposals + ground truth as RoIs, sampled
        props, _ = self.proposals({k: (v[0].detach(), v[1].detach(), v[2].detach()) for k, v in rpn_out.items()}, tuple(grid.shape[1:]), cfg.rpn_nms_train)
        rois = torch.cat([props, boxes]) if len(boxes) else props
        if len(rois) == 0:
            zero = grid.sum() * 0
            return {"rpn_cls": rpn_cls, "rpn_reg": zero + rpn_reg, "rpn_ctr": zero + rpn_ctr, "cls": zero, "box": zero, "mask": zero, "total": rpn_cls + rpn_reg + rpn_ctr}
        if len(boxes):
            iou = box_iou_3d(rois, boxes)
            best_iou, gt_idx = iou.max(1)
        else:
            best_iou, gt_idx = rois.new_zeros(len(rois)), torch.zeros(len(rois), dtype=torch.long, device=rois.device)
        pos = best_iou >= cfg.fg_iou
        pos_idx, neg_idx = torch.nonzero(pos)[:, 0], torch.nonzero(~pos)[:, 0]
        n_pos_roi = min(len(pos_idx), int(cfg.rois_per_scene * cfg.positive_fraction))
        pos_idx = pos_idx[torch.randperm(len(pos_idx), generator=generator)[:n_pos_roi].to(pos_idx.device)]
        neg_idx = neg_idx[torch.randperm(len(neg_idx), generator=generator)[: cfg.rois_per_scene - n_pos_roi].to(neg_idx.device)]
        sel = torch.cat([pos_idx, neg_idx])
        rois_s, is_pos = rois[sel], torch.cat([torch.ones_like(pos_idx, dtype=torch.bool), torch.zeros_like(neg_idx, dtype=torch.bool)])
        target_cls = torch.where(is_pos, classes[gt_idx[sel]] if len(boxes) else torch.zeros_like(sel), torch.zeros_like(sel))
        logits, deltas = self.heads(feats, rois_s)
        loss_cls = F.cross_entropy(logits, target_cls)
        if is_pos.any():
            gt_box = boxes[gt_idx[sel][is_pos]]
            t = encode_boxes(gt_box, rois_s[is_pos])
            d = deltas[is_pos].gather(1, target_cls[is_pos][:, None, None].expand(-1, 1, 6))[:, 0]
            loss_box = F.smooth_l1_loss(d, t, reduction="sum", beta=1.0 / 9.0) / is_pos.sum()
            mp = torch.nonzero(is_pos)[: cfg.mask_rois, 0]  # positives come first, in random order
            m_logits = self.mask_logits(feats, rois_s[mp])
            m = m_logits.gather(1, target_cls[mp][:, None, None, None, None].expand(-1, 1, *m_logits.shape[2:]))[:, 0]
            m_t = mask_targets(labels, rois_s[mp], gt_idx[sel][mp] + 1, cfg.mask_roi)
            loss_mask = F.binary_cross_entropy_with_logits(m, m_t)
        else:
            loss_box = loss_mask = logits.sum() * 0
        total = rpn_cls + rpn_reg + rpn_ctr + loss_cls + loss_box + loss_mask
        return {"rpn_cls": rpn_cls, "rpn_reg": rpn_reg + 0 * total, "rpn_ctr": rpn_ctr + 0 * total, "cls": loss_cls, "box": loss_box, "mask": loss_mask, "total": total}

    # -- inference
    @torch.no_grad()
    def detect(self, grid: Tensor, score_threshold: float | None = None) -> dict[str, Tensor]:
        """Detections of one scene: ``boxes`` (D, 6) voxel units, ``scores`` (D,), ``classes`` (D,)
        in 1..L-1, ``masks`` (D, m, m, m) probabilities of the detected class inside each box."""
        cfg = self.cfg
        thr = cfg.score_threshold if score_threshold is None else score_threshold
        feats = self.backbone(grid[None])
        props, _ = self.proposals(self.rpn(feats), tuple(grid.shape[1:]))
        if len(props) == 0:
            m = cfg.mask_roi
            return {"boxes": props, "scores": props.new_zeros(0), "classes": torch.zeros(0, dtype=torch.long, device=grid.device), "masks": props.new_zeros(0, m, m, m)}
        logits, deltas = self.heads(feats, props)
        prob = logits.softmax(-1)
        score, cls = prob[:, 1:].max(-1)
        cls = cls + 1
        d = deltas.gather(1, cls[:, None, None].expand(-1, 1, 6))[:, 0]
        boxes = decode_boxes(d, props)
        limit = torch.tensor(grid.shape[1:], device=grid.device, dtype=boxes.dtype)
        boxes = torch.cat([boxes[:, :3].clamp_min(0), torch.minimum(boxes[:, 3:], limit)], -1)
        keep = score >= thr
        boxes, score, cls = boxes[keep], score[keep], cls[keep]
        keep = nms_3d(boxes, score, cfg.det_nms)
        boxes, score, cls = boxes[keep], score[keep], cls[keep]
        if len(boxes):
            m_logits = self.mask_logits(feats, boxes)
            masks = torch.sigmoid(m_logits.gather(1, cls[:, None, None, None, None].expand(-1, 1, *m_logits.shape[2:]))[:, 0])
        else:
            masks = boxes.new_zeros(0, cfg.mask_roi, cfg.mask_roi, cfg.mask_roi)
        return {"boxes": boxes, "scores": score, "classes": cls, "masks": masks}


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (Lin et al.) per element, as FCOS / NeRF-RPN's objectness loss."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return a_t * ce * (1 - p_t) ** gamma


def mask_targets(labels: Tensor, rois: Tensor, ids: Tensor, size: int) -> Tensor:
    """Binary (R, m, m, m) float targets: is voxel id ``ids[r]`` at each bin centre of RoI r
    (nearest voxel of the label grid (X, Y, Z))."""
    frac = (torch.arange(size, device=rois.device, dtype=torch.float32) + 0.5) / size
    lo, ext = rois[:, :3], rois[:, 3:] - rois[:, :3]
    out = []
    dims = torch.tensor(labels.shape, device=rois.device)
    for r in range(len(rois)):
        axes = [lo[r, d] + frac * ext[r, d] for d in range(3)]
        idx = [torch.floor(a).long().clamp(0, int(dims[d]) - 1) for d, a in enumerate(axes)]
        sub = labels[idx[0][:, None, None], idx[1][None, :, None], idx[2][None, None, :]]
        out.append((sub == ids[r]).float())
    return torch.stack(out) if out else rois.new_zeros(0, size, size, size)


def paste_masks(det: dict[str, Tensor], shape: tuple[int, int, int], threshold: float = 0.5) -> Tensor:
    """Instance label grid (X, Y, Z) int64 from detections: voxel -> detection k+1 whose mask
    (resampled at the voxel centre) is >= ``threshold``; overlaps go to the higher mask x score."""
    device = det["boxes"].device
    labels = torch.zeros(shape, dtype=torch.long, device=device)
    best = torch.zeros(shape, dtype=torch.float32, device=device)
    for k in range(len(det["boxes"])):
        box = det["boxes"][k]
        lo = torch.floor(box[:3]).long().clamp_min(0)
        hi = torch.minimum(torch.ceil(box[3:]).long(), torch.tensor(shape, device=device))
        if (hi <= lo).any():
            continue
        axes = [torch.arange(int(lo[d]), int(hi[d]), device=device, dtype=torch.float32) + 0.5 for d in range(3)]
        # normalised coordinates of the voxel centres inside the box, in the mask's [-1, 1] frame
        norm = [2.0 * (a - box[d]) / (box[d + 3] - box[d]).clamp_min(1e-6) - 1.0 for d, a in enumerate(axes)]
        gx, gy, gz = torch.meshgrid(*norm, indexing="ij")
        grid = torch.stack([gz, gy, gx], -1)[None]
        prob = F.grid_sample(det["masks"][k][None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
        value = prob * det["scores"][k]
        region = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
        take = (prob >= threshold) & (value > best[region])
        labels[region] = torch.where(take, k + 1, labels[region])
        best[region] = torch.where(take, value, best[region])
    return labels


def config_dict(cfg: RcnnConfig) -> dict:
    return asdict(cfg)
