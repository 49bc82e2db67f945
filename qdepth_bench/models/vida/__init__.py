"""Video-Depth-Anything (ViDA): temporally consistent relative depth for whole videos, the paper's depth labels.

`config` names the released sizes, `model` is the network (transformers' DINOv2 layers and Depth-Anything
fusion blocks with ViDA's temporal attention between them), `checkpoint` loads the released `.pth` files and
`inference` runs a video of any length through overlapping windows aligned in scale and shift.
"""
