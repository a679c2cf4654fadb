"""Intelligent customer service (`lmadapt support`): a bot built from a history of questions and answers, that
answers what it can (an intent's template, or the nearest known answer) and hands the rest to a person."""
