from medxiaohe_training.cli import main

main()
