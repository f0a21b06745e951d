import flordb as flor
import pytorch_lightning as pl
import torch.nn.functional as F


class LitModel(pl.LightningModule):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.backbone(x)
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss)
        return loss

    @torch.no_grad()
    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self.backbone(x).argmax(1) == y).float().mean()
        self.log("val/acc", acc)
