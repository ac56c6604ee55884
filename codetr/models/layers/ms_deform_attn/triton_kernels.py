"""Triton kernels for multi-scale deformable attention, forward and backward.

One program handles one (batch, query, head) triple and holds a ``[L*P, D]`` tile: every
sampling point of every level against every channel of the head. Bilinear sampling
matches ``grid_sample(align_corners=False, padding_mode='zeros')``: the pixel coordinate
is ``loc * w - 0.5`` and each of the four corners that falls outside the map reads zero.
All arithmetic is fp32 whatever the storage dtype.

Importing this file imports triton; set ``TRITON_INTERPRET=1`` before that to run the
kernels on CPU tensors (slow; for tests only).
"""
import triton
import triton.language as tl


@triton.jit
def _corner(value_ptr, row_base, xx, yy, height, width, start, head_offset, num_heads,
            head_dims, d, lp_mask, d_mask):
    """Load one bilinear corner for every point: returns values [LP, D], offsets, mask."""
    valid = lp_mask & (xx >= 0) & (xx < width) & (yy >= 0) & (yy < height)
    row = row_base + start + yy * width + xx
    row = tl.where(valid, row, 0)  # keep masked-off addresses in range
    offsets = (row * num_heads * head_dims + head_offset)[:, None] + d[None, :]
    mask = valid[:, None] & d_mask[None, :]
    values = tl.load(value_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    return values, offsets, mask


@triton.jit
def _point_setup(shapes_ptr, starts_ptr, loc_ptr, attn_ptr, pid, num_lp, num_points,
                 BLOCK_LP: tl.constexpr):
    """Per-point level geometry, integer corner, fractional part and attention weight."""
    lp = tl.arange(0, BLOCK_LP)
    lp_mask = lp < num_lp
    level = lp // num_points
    height = tl.load(shapes_ptr + level * 2, mask=lp_mask, other=1)
    width = tl.load(shapes_ptr + level * 2 + 1, mask=lp_mask, other=1)
    start = tl.load(starts_ptr + level, mask=lp_mask, other=0)
    point = pid.to(tl.int64) * num_lp + lp  # index of (b, q, h, l, p)
    loc_x = tl.load(loc_ptr + point * 2, mask=lp_mask, other=0.0).to(tl.float32)
    loc_y = tl.load(loc_ptr + point * 2 + 1, mask=lp_mask, other=0.0).to(tl.float32)
    attn = tl.load(attn_ptr + point, mask=lp_mask, other=0.0).to(tl.float32)
    x = loc_x * width.to(tl.float32) - 0.5
    y = loc_y * height.to(tl.float32) - 0.5
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    x0 = x0f.to(tl.int64)
    y0 = y0f.to(tl.int64)
    return (point, lp_mask, height, width, start, x0, y0, x - x0f, y - y0f, attn)


@triton.jit
def msda_forward_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
                        num_queries, num_heads, num_value, head_dims, num_lp, num_points,
                        BLOCK_LP: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[b, q, h*D:(h+1)*D] = sum over (l, p) of attn * bilinear(value_l, loc)."""
    pid = tl.program_id(0)  # = (b * Q + q) * H + h
    head = pid % num_heads
    batch = pid // (num_heads * num_queries)
    d = tl.arange(0, BLOCK_D)
    d_mask = d < head_dims
    (point, lp_mask, height, width, start, x0, y0, fx, fy, attn) = _point_setup(
        shapes_ptr, starts_ptr, loc_ptr, attn_ptr, pid, num_lp, num_points, BLOCK_LP)
    row_base = batch.to(tl.int64) * num_value
    head_offset = head * head_dims
    v00, _, _ = _corner(value_ptr, row_base, x0, y0, height, width, start, head_offset,
                        num_heads, head_dims, d, lp_mask, d_mask)
    v01, _, _ = _corner(value_ptr, row_base, x0 + 1, y0, height, width, start, head_offset,
                        num_heads, head_dims, d, lp_mask, d_mask)
    v10, _, _ = _corner(value_ptr, row_base, x0, y0 + 1, height, width, start, head_offset,
                        num_heads, head_dims, d, lp_mask, d_mask)
    v11, _, _ = _corner(value_ptr, row_base, x0 + 1, y0 + 1, height, width, start, head_offset,
                        num_heads, head_dims, d, lp_mask, d_mask)
    gx = 1.0 - fx
    gy = 1.0 - fy
    sample = ((gx * gy)[:, None] * v00 + (fx * gy)[:, None] * v01
              + (gx * fy)[:, None] * v10 + (fx * fy)[:, None] * v11)  # [LP, D]
    out = tl.sum(attn[:, None] * sample, axis=0)  # [D]
    out_offsets = pid.to(tl.int64) * head_dims + d
    tl.store(out_ptr + out_offsets, out.to(out_ptr.dtype.element_ty), mask=d_mask)


@triton.jit
def msda_backward_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
                         grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
                         num_queries, num_heads, num_value, head_dims, num_lp, num_points,
                         BLOCK_LP: tl.constexpr, BLOCK_D: tl.constexpr):
    """Gradients of the forward kernel; ``grad_value_ptr`` is fp32 and filled by atomics."""
    pid = tl.program_id(0)
    head = pid % num_heads
    batch = pid // (num_heads * num_queries)
    d = tl.arange(0, BLOCK_D)
    d_mask = d < head_dims
    (point, lp_mask, height, width, start, x0, y0, fx, fy, attn) = _point_setup(
        shapes_ptr, starts_ptr, loc_ptr, attn_ptr, pid, num_lp, num_points, BLOCK_LP)
    grad_out = tl.load(grad_out_ptr + pid.to(tl.int64) * head_dims + d, mask=d_mask,
                       other=0.0).to(tl.float32)  # [D]
    row_base = batch.to(tl.int64) * num_value
    head_offset = head * head_dims
    gx = 1.0 - fx
    gy = 1.0 - fy
    v00, o00, m00 = _corner(value_ptr, row_base, x0, y0, height, width, start, head_offset,
                            num_heads, head_dims, d, lp_mask, d_mask)
    v01, o01, m01 = _corner(value_ptr, row_base, x0 + 1, y0, height, width, start, head_offset,
                            num_heads, head_dims, d, lp_mask, d_mask)
    v10, o10, m10 = _corner(value_ptr, row_base, x0, y0 + 1, height, width, start, head_offset,
                            num_heads, head_dims, d, lp_mask, d_mask)
    v11, o11, m11 = _corner(value_ptr, row_base, x0 + 1, y0 + 1, height, width, start,
                            head_offset, num_heads, head_dims, d, lp_mask, d_mask)
    # Each corner's value dotted with the incoming gradient: [LP].
    g00 = tl.sum(v00 * grad_out[None, :], axis=1)
    g01 = tl.sum(v01 * grad_out[None, :], axis=1)
    g10 = tl.sum(v10 * grad_out[None, :], axis=1)
    g11 = tl.sum(v11 * grad_out[None, :], axis=1)
    grad_attn = gx * gy * g00 + fx * gy * g01 + gx * fy * g10 + fx * fy * g11
    # d(pixel x)/d(loc x) = w_l and d(pixel y)/d(loc y) = h_l.
    grad_fx = gy * (g01 - g00) + fy * (g11 - g10)
    grad_fy = gx * (g10 - g00) + fx * (g11 - g01)
    grad_x = attn * grad_fx * width.to(tl.float32)
    grad_y = attn * grad_fy * height.to(tl.float32)
    tl.store(grad_attn_ptr + point, grad_attn.to(grad_attn_ptr.dtype.element_ty), mask=lp_mask)
    tl.store(grad_loc_ptr + point * 2, grad_x.to(grad_loc_ptr.dtype.element_ty), mask=lp_mask)
    tl.store(grad_loc_ptr + point * 2 + 1, grad_y.to(grad_loc_ptr.dtype.element_ty),
             mask=lp_mask)
    # Many queries sample the same value rows, hence atomics.
    scaled = attn[:, None] * grad_out[None, :]  # [LP, D]
    tl.atomic_add(grad_value_ptr + o00, (gx * gy)[:, None] * scaled, mask=m00)
    tl.atomic_add(grad_value_ptr + o01, (fx * gy)[:, None] * scaled, mask=m01)
    tl.atomic_add(grad_value_ptr + o10, (gx * fy)[:, None] * scaled, mask=m10)
    tl.atomic_add(grad_value_ptr + o11, (fx * fy)[:, None] * scaled, mask=m11)
