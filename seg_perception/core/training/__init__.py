"""Training the project's segmentation models (issue #6): labelled-folder loading (CamVid and
Cityscapes layouts), painted parking bays, augmentation, class-balanced loss and a resumable
training loop. Needs torch and torchvision; nothing here is imported by the node."""
