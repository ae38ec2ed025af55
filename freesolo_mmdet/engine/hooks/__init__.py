from .self_training_hook import SelfTrainingHook

__all__ = ['SelfTrainingHook']
