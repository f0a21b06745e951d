import flordb as flor
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, block, depths, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.stage1 = self.make_stage(block, 16, depths[0])
        self.stage2 = self.make_stage(block, 32, depths[0], 2)
        self.stage3 = self.make_stage(block, 64, depths[1], 2)
        flor.log("stages", 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(64, classes)
