from medxiaohe_services.cli import main

main()
