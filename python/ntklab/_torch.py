"""PyTorch ``nn.Sequential`` -> ntklab's layer list and named tensors. torch is imported only here, and only
when the caller passed a torch object."""

import math


def _conv_padding(m, k):
    """ntklab's padding name for a torch conv's padding (only what ntklab's conv can express)."""
    mode = m.padding_mode
    if mode not in ("zeros", "circular"):
        raise ValueError(f"{type(m).__name__}: padding_mode={mode!r} is not supported (zeros or circular)")
    p = m.padding
    if p == "valid" or (not isinstance(p, str) and all(v == 0 for v in p)):
        if mode == "circular":
            return "valid"
        return "valid"
    same = p == "same" or (not isinstance(p, str) and all(2 * v + 1 == kk for v, kk in zip(p, k)))
    if same and all(s == 1 for s in m.stride):
        return "circular" if mode == "circular" else "same"
    raise ValueError(f"{type(m).__name__}: padding {p} with kernel {tuple(k)} and stride {tuple(m.stride)} is "
                     "not supported (padding 0, or 'same' / (k-1)/2 with stride 1)")


def _values(t):
    a = t.detach().cpu().double().contiguous().numpy()
    return [int(s) for s in a.shape], a.tobytes()


def sequential_to_tensors(module, images=False):
    """(architecture text, [(name, shape, float64 bytes)], {ntklab name: torch name}) of an nn.Sequential. The
    tensors are named as ntklab's nn.Sequential of the translated layers (index of the layer in the
    architecture), which differs from the torch index where a module is dropped (Identity) or two merge
    (AdaptiveAvgPool + Flatten)."""
    import torch.nn as nn

    if not isinstance(module, nn.Sequential):
        raise TypeError(f"from_torch takes an nn.Sequential, got {type(module).__name__}")
    ops, tensors, names = [], [], {}
    children = list(module.named_children())
    # spatial: the current module's input has positions (images in, or after a conv or pooling)
    i, spatial = 0, bool(images)
    while i < len(children):
        name, m = children[i]
        if isinstance(m, nn.Linear):
            if spatial:
                # torch's Linear on N C H W maps the last (width) axis, ntklab's dense on an image its channels.
                raise ValueError(f"layer {name}: a Linear on images (or on the outputs of a convolution or pooling) "
                                 "maps their last (width) axis in torch; put Flatten (or AdaptiveAvgPool(1) and "
                                 "Flatten) before it")
            ops.append(f"dense({m.out_features}" + (",b_std=1" if m.bias is not None else "") + ")")
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            spatial = True
            if any(d != 1 for d in m.dilation) or m.groups != 1:
                raise ValueError(f"layer {name}: dilated or grouped convolutions are not supported")
            k = m.kernel_size
            ops.append(f"conv({m.out_channels},{'x'.join(map(str, k))},stride={'x'.join(map(str, m.stride))},"
                       f"padding={_conv_padding(m, k)}" + (",b_std=1" if m.bias is not None else "") + ")")
        elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
            spatial = True
            k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * (
                2 if isinstance(m, nn.AvgPool2d) else 1)
            s = m.stride if isinstance(m.stride, tuple) else (m.stride,) * len(k)
            pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
            if any(p != 0 for p in pad) or m.ceil_mode:
                raise ValueError(f"layer {name}: average pooling with padding or ceil_mode is not supported")
            ops.append(f"avg_pool({'x'.join(map(str, k))},stride={'x'.join(map(str, s))},padding=valid)")
        elif isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            out = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
            nxt = children[i + 1][1] if i + 1 < len(children) else None
            if any(o != 1 for o in out) or not isinstance(nxt, nn.Flatten):
                raise ValueError(f"layer {name}: only AdaptiveAvgPool(1) followed by Flatten (global average "
                                 "pooling) is supported")
            ops.append("global_avg_pool")
            spatial = False
            i += 1  # the Flatten
        elif isinstance(m, nn.Flatten):
            ops.append("flatten")
            spatial = False
        elif isinstance(m, nn.Identity):
            pass
        elif isinstance(m, nn.ReLU):
            ops.append("relu")
        elif isinstance(m, nn.Tanh):
            ops.append("tanh")
        elif isinstance(m, nn.GELU):
            if m.approximate != "none":
                raise ValueError(f"layer {name}: only the exact GELU (approximate='none') is supported")
            ops.append("gelu")
        elif isinstance(m, nn.SiLU):
            ops.append("silu")
        elif isinstance(m, nn.ELU):
            ops.append(f"elu(alpha={float(m.alpha)!r})")
        elif isinstance(m, nn.LeakyReLU):
            ops.append(f"leaky_relu(a={float(m.negative_slope)!r})")
        elif isinstance(m, nn.Softplus):
            if m.beta != 1:
                raise ValueError(f"layer {name}: Softplus with beta != 1 is not supported")
            ops.append("softplus")
        else:
            raise ValueError(f"layer {name}: {type(m).__name__} is not supported (Linear, Conv1d/2d, AvgPool, "
                             "AdaptiveAvgPool(1)+Flatten, Flatten, Identity, ReLU, Tanh, GELU, SiLU, ELU, LeakyReLU, "
                             "Softplus)")
        for pname, p in m.named_parameters(recurse=False):
            if not math.prod(p.shape):
                continue
            shape, data = _values(p)
            ours = f"{len(ops) - 1}.{pname}"
            tensors.append((ours, shape, data))
            names[ours] = f"{name}.{pname}"
        i += 1
    if not ops:
        raise ValueError("the nn.Sequential has no layers ntklab can use")
    return ",".join(ops), tensors, names
