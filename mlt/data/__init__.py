"""Dataset readers: VOC devkits, source sets, label maps, class subsets, downloads."""
