import flordb as flor
import numpy as np


def write_fp32(tensor, file):
    file.write(tensor.astype(np.float32).tobytes())


def write_bf16(tensor, file):
    file.write(tensor.astype(np.float16).tobytes())


def write_tensors_fp32(tensors, layers, file):
    write_fp32(tensors["embed.weight"], file)
    for i in range(layers):
        write_fp32(tensors[f"block.{i}.attn.weight"], file)
    for i in range(layers):
        write_fp32(tensors[f"block.{i}.mlp.weight"], file)
    write_fp32(tensors["head.weight"], file)


def write_tensors_bf16(tensors, layers, file):
    write_bf16(tensors["embed.weight"], file)
    for i in range(layers):
        write_bf16(tensors[f"block.{i}.attn.weight"], file)
    for i in range(layers):
        write_bf16(tensors[f"block.{i}.mlp.weight"], file)
    write_fp32(tensors["head.weight"], file)
