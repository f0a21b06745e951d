import flordb as flor
import torch


def setup(model, opt, device):
    if opt.sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
        print('Using SyncBatchNorm()')
        flor.log("sync_bn", 1)
        model.train()
    return model
